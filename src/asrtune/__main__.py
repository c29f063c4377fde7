from asrtune.cli import main

main()
