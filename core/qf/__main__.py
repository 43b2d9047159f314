from qf.app.cli import main

main()
