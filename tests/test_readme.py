import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_the_custom_env_example_runs(tmp_path):
    text = README.read_text()
    marker = text.index("<!-- example: custom-env")
    code = re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
    namespace = {"run_dir": tmp_path / "run"}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].metrics[-1]["eval_return_mean"] > -10
