from artfs.cli.main import main

main()
