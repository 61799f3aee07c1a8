"""The explorer page served by the sequencer at /explorer/: batches and their anchors, a search for
addresses, transactions, deposits and withdrawals, the federation's BTC and the live conservation check.
Plain HTML/JS/CSS in static/, no build step."""
