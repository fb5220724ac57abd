import json
import subprocess
import sys

import pytest

from gesture_apps import environment_report, main


def test_info_reports_every_library(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packages"] == {
        name: "0.1.0"
        for name in (
            "motion-tokenizers",
            "flow-backbones",
            "gesture-data",
            "gesture-eval",
            "gesture-apps",
        )
    }
    assert report["device"] in ("cpu", "cuda")
    assert report == environment_report()


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "info" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fly"])
    assert e.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "gesture_apps.cli", "info"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "motion-tokenizers" in out.stdout and "torch" in out.stdout
