from qf.cli import main

main()
