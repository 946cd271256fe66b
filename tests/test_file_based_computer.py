"""FileBasedQuantityComputer: templates, isolated work directories, timeouts, clear failures."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chemfit_core import (
    CommandTimeoutError,
    EvaluateContext,
    ExternalCommandError,
    FileBasedQuantityComputer,
    OutputMissingError,
    TemplateRenderError,
    render_template,
)

# A tiny "simulation code": reads input.json, writes result.json with x**2 after a delay.
CODE = (
    "import json, time, pathlib; p = json.load(open('input.json')); time.sleep(p.get('delay', 0)); "
    "pathlib.Path('result.json').write_text(json.dumps({'square': p['x'] ** 2, 'x': p['x']}))"
)
TEMPLATE = '{"x": {{ x }}, "delay": {{ delay }}}\n'


def read_result(files):
    return json.loads(files[0].read_text())


def square_computer(base: Path, **kwargs) -> FileBasedQuantityComputer:
    return FileBasedQuantityComputer(
        output_files=["result.json"],
        output_parsers=read_result,
        base_working_directory=base,
        executable_cmd=[sys.executable, "-c", CODE],
        templates={"input.json": TEMPLATE},
        **kwargs,
    )


def test_parameters_are_rendered_into_inputs_and_outputs_parsed(tmp_path):
    computer = square_computer(tmp_path, template_variables={"delay": 0})
    assert computer({"x": 3.0})["square"] == 9.0
    assert list(tmp_path.iterdir()) == [], "a successful evaluation's directory is removed"


def test_sixteen_concurrent_evaluations_use_their_own_directories(tmp_path):
    computer = square_computer(tmp_path, template_variables={"delay": 0.2}, delete_temp_workdirs=False)
    contexts = [EvaluateContext() for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: computer({"x": float(i)}, contexts[i]), range(16)))
    assert [r["x"] for r in results] == [float(i) for i in range(16)]
    assert [r["square"] for r in results] == [float(i * i) for i in range(16)]
    workdirs = {ctx.meta["workdir"] for ctx in contexts}
    assert len(workdirs) == 16
    for i, ctx in enumerate(contexts):
        assert json.loads((Path(ctx.meta["workdir"]) / "result.json").read_text())["x"] == float(i)


def test_command_past_its_timeout_is_killed_and_reported(tmp_path):
    computer = square_computer(tmp_path, template_variables={"delay": 30}, command_timeout=0.5)
    start = time.perf_counter()
    with pytest.raises(CommandTimeoutError) as info:
        computer({"x": 1.0})
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "time limit of 0.5 s" in message and "work directory kept" in message
    assert Path(info.value.workdir).is_dir()


def test_failing_command_quotes_command_exit_code_output_and_workdir(tmp_path):
    code = "import sys; print('reading input'); print('fatal: bad parameter', file=sys.stderr); sys.exit(3)"
    computer = FileBasedQuantityComputer(
        output_files=["out.txt"],
        output_parsers=read_result,
        base_working_directory=tmp_path,
        executable_cmd=[sys.executable, "-c", code],
        name="crasher",
    )
    with pytest.raises(ExternalCommandError) as info:
        computer({"x": 1.0})
    error = info.value
    assert error.returncode == 3
    message = str(error)
    assert "exited with code 3" in message and sys.executable in message
    assert "fatal: bad parameter" in message and "reading input" in message
    assert str(error.workdir) in message and error.workdir.is_dir()
    assert error.workdir.name.startswith("crasher-")
    assert error.workdir.with_name(error.workdir.name + ".dump").is_file()


def test_missing_output_file_is_an_error_naming_it(tmp_path):
    computer = FileBasedQuantityComputer(
        output_files=["never_written.dat"],
        output_parsers=read_result,
        base_working_directory=tmp_path,
        executable_cmd=[sys.executable, "-c", "pass"],
    )
    with pytest.raises(OutputMissingError, match="did not write never_written.dat"):
        computer({})


def test_undefined_template_variable_is_named(tmp_path):
    computer = square_computer(tmp_path)  # no "delay" anywhere
    with pytest.raises(TemplateRenderError, match="'delay' is undefined"):
        computer({"x": 1.0})


def test_template_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.j2"
    bad.write_text("line one\n{{ x \n")
    with pytest.raises(TemplateRenderError, match=r"bad\.j2, line 2"):
        FileBasedQuantityComputer(["o"], read_result, tmp_path, [sys.executable], templates={"in": bad})


def test_missing_template_file_is_reported(tmp_path):
    with pytest.raises(TemplateRenderError, match="does not exist"):
        FileBasedQuantityComputer(["o"], read_result, tmp_path, [sys.executable], templates={"in": "nope.j2"})


def test_templates_are_sandboxed():
    with pytest.raises(TemplateRenderError):
        render_template("{{ x.__class__.__mro__[1].__subclasses__() }}", {"x": 1})


def test_nested_parameters_are_available_flattened(tmp_path):
    text = render_template("{{ lj.epsilon }} {{ lj__epsilon }}\n", {"lj": {"epsilon": 1.5}, "lj__epsilon": 1.5})
    assert text == "1.5 1.5\n"


@pytest.mark.parametrize("name", ["/abs/out.txt", "../escape.txt"])
def test_output_files_cannot_leave_the_work_directory(tmp_path, name):
    with pytest.raises(ValueError, match="inside the work directory"):
        FileBasedQuantityComputer([name], read_result, tmp_path, [sys.executable])


def test_chemfit_style_with_cmd_and_presubmit(tmp_path):
    def write_input(parameters, workdir, *, extra):
        (workdir / "input.json").write_text(json.dumps({"x": parameters["x"] + extra}))

    def command(parameters, workdir, *, python):
        return [python, "-c", CODE]

    base = FileBasedQuantityComputer(["result.json"], read_result, tmp_path)
    computer = base.with_presubmit(write_input, extra=1.0).with_cmd(command, python=sys.executable)
    assert computer({"x": 2.0})["square"] == 9.0
