"""Runs a notebook on the kernel its metadata names, with nbclient (what
`jupyter nbconvert --execute` uses), and prints each code cell's saved and
new text/plain outputs as JSON: argv[1] the notebook, argv[2] where the
executed copy goes."""

import copy
import json
import sys

import nbclient
import nbformat


def texts(cell):
    found = []
    for output in cell.get("outputs", []):
        if output["output_type"] in ("execute_result", "display_data"):
            found.append(output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            found.append("error: " + output["evalue"])
        elif output["output_type"] == "stream":
            found.append(output["text"])
    return found


def main():
    saved = nbformat.read(sys.argv[1], as_version=4)
    notebook = copy.deepcopy(saved)
    nbclient.NotebookClient(notebook, timeout=120).execute()
    nbformat.write(notebook, sys.argv[2])
    pairs = [
        {"source": old.source, "saved": texts(old), "ran": texts(new)}
        for old, new in zip(saved.cells, notebook.cells)
        if old.cell_type == "code"
    ]
    print(json.dumps({"kernel": notebook.metadata.kernelspec.name, "cells": pairs}))


if __name__ == "__main__":
    main()
