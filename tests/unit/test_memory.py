"""The mount's memory cache is scan-resistant: a sequential stream through a file larger than
memory does not push out the pieces read at random (a cold stream must not make a training
job's hot files wait on the disk), and memory is never over its bound."""

from artfs.fs.content import Memory

MIB = 1 << 20


def piece(name: str, n: int = MIB) -> tuple[bytes, bytes]:
    return name.encode().ljust(32, b"."), bytes([len(name)]) * n


def stream_through(m: Memory, count: int, tag: str = "s") -> None:
    for i in range(count):
        d, data = piece(f"{tag}{i}")
        m.put(d, data, stream=True)
        assert m.get(d, promote=False) == data  # the stream reads what it read ahead


def held(m: Memory, names: list[str]) -> int:
    return sum(piece(n)[0] in m for n in names)


def test_a_stream_larger_than_memory_leaves_random_reads_in_memory():
    m = Memory(64 * MIB, 32 * MIB)
    hot = [f"hot{i}" for i in range(24)]
    for n in hot:
        m.put(*piece(n))
    stream_through(m, 1024)  # 1 GiB through 64 MiB
    assert held(m, hot) == 24
    assert m.get(piece("hot3")[0]) == piece("hot3")[1]


def test_read_ahead_read_again_at_random_is_kept_like_a_random_read():
    m = Memory(64 * MIB, 32 * MIB)
    names = [f"warm{i}" for i in range(16)]
    for n in names:  # read sequentially once (read ahead) ...
        m.put(*piece(n), stream=True)
    for n in names:  # ... then at random: wanted for itself now
        assert m.get(piece(n)[0], promote=True) is not None
    stream_through(m, 500)
    assert held(m, names) == 16
    only_streamed = [f"once{i}" for i in range(16)]
    for n in only_streamed:
        m.put(*piece(n), stream=True)
    stream_through(m, 500, tag="t")
    assert held(m, only_streamed) == 0, "what a stream read once goes first"


def test_memory_stays_within_its_bound_and_streams_within_their_share():
    m = Memory(64 * MIB, 32 * MIB)
    for i in range(100):  # random reads alone may use all of it
        m.put(*piece(f"r{i}"))
        assert m._main_used + m._stream_used <= 64 * MIB
    assert held(m, [f"r{i}" for i in range(100)]) == 64
    stream_through(m, 200)  # a stream takes back its share, no more
    assert m._stream_used <= 32 * MIB and m._main_used + m._stream_used <= 64 * MIB
    assert held(m, [f"r{i}" for i in range(100)]) == 32
    assert held(m, [f"r{i}" for i in range(68, 100)]) == 32, "the most recently used stay"
