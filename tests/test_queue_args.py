"""Queue-facing plans: plain arguments validated before anything moves; generated files valid.

No processes here: the queue server's own checks (annotation types, permissions schema, HTTP
server config schema) are called in process on what opmap generates.
"""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import pytest

from opmap.devices import SafetyWindow, Technique
from opmap.queue import (
    QUEUE_PLAN_NAMES,
    PlanArgumentError,
    QueueSettings,
    httpserver_config,
    load_protocol,
    queue_plans,
    user_group_permissions,
    validate_experiment_arguments,
    write_queue_files,
)

SMALL = {"z_start_um": -3.0, "z_count": 6, "x_start_um": 200.0, "x_stop_um": 365.0, "x_count": 5}


def _plans() -> dict:
    """The queue-facing plans on a beamline with no devices: only validation can run."""
    beamline = SimpleNamespace(config=SimpleNamespace(window=SafetyWindow()))
    return queue_plans(beamline)


def test_docstring_examples_pass():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    names = {
        "validate_experiment_arguments": validate_experiment_arguments,
        "PlanArgumentError": PlanArgumentError,
    }
    for test in finder.find(validate_experiment_arguments, globs=names):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


def test_paper_protocol_is_scaled_like_the_rehearsal():
    table = load_protocol("paper", time_scale=0.02)
    assert [step.technique for step in table.steps] == [
        Technique.CONSTANT_VOLTAGE,
        Technique.OPEN_CIRCUIT,
        Technique.CONSTANT_CURRENT,
        Technique.OPEN_CIRCUIT,
    ]
    assert table.max_duration_s == pytest.approx(0.02 * (2.3 * 3600 + 600 + 3 * 3600 + 1800))


def test_protocol_from_a_toml_file_equals_the_same_dict(tmp_path):
    path = tmp_path / "protocol.toml"
    path.write_text(
        '[[steps]]\ntechnique = "constant voltage"\nmax_duration_s = 600\nsetpoint = 4.2\n'
        '[[steps]]\ntechnique = "open circuit"\nmax_duration_s = 60\nlabel = "rest"\n'
    )
    steps = [
        {"technique": "constant voltage", "max_duration_s": 600, "setpoint": 4.2},
        {"technique": "open circuit", "max_duration_s": 60, "label": "rest"},
    ]
    assert load_protocol(str(path)) == load_protocol({"steps": steps})
    assert load_protocol(str(path), time_scale=0.5).max_duration_s == 330.0


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"geometry": {**SMALL, "z_count": 0}}, "geometry.z_count"),
        ({"geometry": {**SMALL, "x_stop_um": 100.0}}, "x_stop_um=100.0 must be greater"),
        ({"geometry": {**SMALL, "exposure_s": -1}}, "geometry.exposure_s"),
        ({"geometry": SMALL, "max_maps": 0}, "max_maps"),
        ({"geometry": SMALL, "map_interval_s": 0}, "map_interval_s"),
        ({"geometry": SMALL, "map_schedule": [[0, 300], [0, 60]]}, "map_schedule[1]"),
        ({"geometry": SMALL, "map_schedule": [[60, 300]]}, "from_time_s=60.0 must be 0 s"),
        (
            {"geometry": SMALL, "map_interval_s": 60, "map_schedule": [[0, 300]]},
            "map_interval_s or map_schedule, not both",
        ),
        ({"geometry": SMALL, "time_scale": -0.5}, "time_scale"),
        ({"geometry": SMALL, "protocol": "papr"}, "protocol='papr' must be 'paper'"),
        ({"geometry": SMALL, "protocol": "/no/such.toml"}, "an existing .toml file"),
        ({"geometry": SMALL, "protocol": {"steps": []}}, "at least one step"),
        (
            {"geometry": SMALL, "protocol": {"steps": [{"technique": "cv", "max_duration_s": 1}]}},
            "protocol: steps.0.technique",
        ),
        ({"geometry": SMALL, "mapp": 2}, "mapp: Extra inputs are not permitted"),
    ],
)
def test_a_bad_argument_is_refused_with_its_name(values, named):
    with pytest.raises(PlanArgumentError, match="operando_experiment_plan: bad argument") as info:
        validate_experiment_arguments(values)
    assert named in str(info.value)


def test_a_protocol_outside_the_safety_window_is_refused_naming_the_step():
    cv = {"technique": "constant voltage", "max_duration_s": 60, "setpoint": 4.8, "label": "hi"}
    args = validate_experiment_arguments({"geometry": SMALL, "protocol": {"steps": [cv]}})
    with pytest.raises(PlanArgumentError, match=r"protocol: step 'hi' setpoint=4.8 V"):
        args.step_table(SafetyWindow())


def test_the_plan_refuses_before_its_first_message():
    plan = _plans()["operando_experiment_plan"](geometry={**SMALL, "x_count": 0})
    with pytest.raises(PlanArgumentError, match=r"geometry\.x_count"):
        next(plan)  # the RunEngine's first step: nothing was yielded, nothing moved


def test_the_queue_server_checks_argument_types_from_the_annotations():
    from bluesky_queueserver.manager.profile_ops import (
        existing_plans_and_devices_from_nspace,
        validate_plan,
    )

    plans, _, _, _ = existing_plans_and_devices_from_nspace(nspace=_plans())
    assert set(plans) == set(QUEUE_PLAN_NAMES)

    def check(kwargs: dict) -> tuple[bool, str]:
        item = {"name": "operando_experiment_plan", "kwargs": kwargs}
        return validate_plan(item, allowed_plans=plans, allowed_devices={})

    assert check({"geometry": SMALL, "protocol": "paper", "max_maps": 2}) == (True, "")
    ok, message = check({"geometry": SMALL, "max_maps": "two"})
    assert not ok and "max_maps" in message
    ok, message = check({"geometry": "6 x 5"})
    assert not ok and "geometry" in message


def test_generated_permissions_allow_only_the_queue_plans(tmp_path):
    from bluesky_queueserver.manager.profile_ops import validate_user_group_permissions

    permissions = user_group_permissions()
    validate_user_group_permissions(permissions)  # raises on a schema error
    assert permissions["user_groups"]["primary"]["allowed_plans"] == list(QUEUE_PLAN_NAMES)


def test_http_config_passes_the_servers_schema_and_holds_no_password(tmp_path):
    from bluesky_httpserver.config import parse_configs

    settings = QueueSettings(run_dir=tmp_path / "queue", http_port=61000)
    paths = write_queue_files(settings)
    parsed = parse_configs(str(paths["httpserver"]))
    assert parsed["uvicorn"] == {"host": "127.0.0.1", "port": 61000}
    password = settings.password_file("operator").read_text().strip()
    assert password not in paths["httpserver"].read_text()
    assert settings.password_file("operator").stat().st_mode & 0o077 == 0
    assert httpserver_config(settings)["authentication"]["allow_anonymous_access"] is False


def test_the_plan_signature_is_the_validated_fields():
    import inspect

    from opmap.queue import ExperimentArguments

    plan = _plans()["operando_experiment_plan"]
    assert list(inspect.signature(plan).parameters) == list(ExperimentArguments.model_fields)
