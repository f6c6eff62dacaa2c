from pathlib import Path

from devtools.config_reference import README, updated_readme


def test_readme_configuration_reference_is_generated_from_the_models() -> None:
    text = README.read_text(encoding="utf-8")
    assert updated_readme(text) == text, "run: python -m devtools.config_reference"


def test_readme_quick_start_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text
    assert "make test" in text
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
