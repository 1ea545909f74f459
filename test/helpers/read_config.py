"""Reads a trainer config that `domlora export` wrote, the way the trainers read it, and prints it as JSON.

YAML goes through PyYAML's safe loader (LLaMA-Factory, Axolotl and MLX-LM all read their configs with PyYAML; it is
installed with python3-torch). A Python file is compiled whole, and the keyword arguments of its LoraConfig(...) call
are evaluated as Python literals, so a `true` where Python needs `True` fails here as it would there.
"""
import ast
import json
import sys

import yaml

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    source = f.read()
if path.endswith(".py"):
    tree = ast.parse(source, path)
    compile(tree, path, "exec")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "LoraConfig"]
    if len(calls) != 1:
        sys.exit(f"expected one LoraConfig(...) call, found {len(calls)}")
    print(json.dumps({kw.arg: ast.literal_eval(kw.value) for kw in calls[0].keywords}))
else:
    print(json.dumps(yaml.safe_load(source)))
