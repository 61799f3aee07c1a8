from btcl2.cli import main

main()
