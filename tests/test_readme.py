import re
from pathlib import Path

from dynaplan.sweep import Sweep, parse_yaml

README = Path(__file__).parents[1] / "README.md"


def test_the_custom_env_example_runs(tmp_path):
    text = README.read_text()
    marker = text.index("<!-- example: custom-env")
    code = re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
    namespace = {"run_dir": tmp_path / "run"}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].metrics[-1]["eval_return_mean"] > -10


def test_the_sweep_file_example_is_a_valid_sweep():
    text = README.read_text()
    marker = text.index("<!-- example: sweep-file")
    sweep = Sweep.from_dict(
        parse_yaml(re.search(r"```yaml\n(.*?)```", text[marker:], re.S).group(1))
    )
    variants = sweep.variants()
    assert len(variants) == 3 * 2 * 2 and sweep.seeds == 5
    assert all(config.env == "Hopper-v5" for config in variants.values())
