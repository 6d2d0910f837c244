from resnas.cli import run

run()
