"""One module or package per DAG stage, in DAG order:

    data        make-sample (the demo's generated dataset), valid-meta
    rvos/       the five models' masks: infer (published code), import-pth, import-zip
    keyframes   key frame = first argmax of the per-frame scores
    propagate/  AOT / DeAOT / optical flow from the key frame
    fusion      the stage-1 and stage-2 pair votes
    pack        the submission zip
    evaluate/   J and F per expression, the summary table, the run report
    audit/      our trees against released ones, with an HTML report

Each is a function over mask trees plus a thin verb (``register``). May import: the base
modules, trees/ and compute/; never another stage, except the run report, which
compares and draws with audit/'s engine and pictures (documented in its docstring).
"""
