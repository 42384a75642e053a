"""The install lines the READMEs give bring what the commands they document need."""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
INSTALL = re.compile(r"pip install '\./clients/python\[([^\]]*)\]'")


def extras(readme):
    found = [set(m.group(1).split(",")) for m in INSTALL.finditer(readme.read_text(encoding="utf-8"))]
    assert found, f"{readme} has no pip install line for the client"
    return found


def test_the_client_readme_installs_what_the_main_readme_does():
    # PyYAML reads config.yaml; cryptography makes generate-vapid's key
    # pair, which both READMEs document.
    for readme in (HERE / "README.md", HERE.parents[1] / "README.md"):
        for line in extras(readme):
            assert line == {"yaml", "vapid"}, f"{readme}: pip install [{','.join(sorted(line))}]"
