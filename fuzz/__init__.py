"""Coverage-guided fuzz harnesses (atheris) for every parser that reads hostile bytes.

One module per harness; `python -m fuzz NAME [libFuzzer flags] CORPUS...` runs one of them,
`scripts/fuzz` runs them all on their corpora (fuzz/corpus/NAME/). See fuzz/README.md.
"""
