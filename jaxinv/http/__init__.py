"""HTTP: a victim server (`serve`, waitress) and the attacker's client (`HTTPOracle`)."""
