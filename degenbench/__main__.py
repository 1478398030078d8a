from degenbench.cli import main

main()
