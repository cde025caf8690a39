"""The package's structure: layers without import cycles, the stage graph from the stages'
declarations, one settings source, typed errors worded as flags only by the command lines."""

import ast
import dataclasses
import json
import typing
from pathlib import Path

import pytest

from age_cgan.cli.words import cli_message
from age_cgan.config import TrainConfig

PACKAGE = Path(__file__).resolve().parents[1] / "age_cgan"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside functions."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target not in (name, "age_cgan"):
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere_in_the_package():
    graph = import_graph()
    assert "age_cgan.training.loop" in graph and graph["age_cgan.training.orchestration"]
    assert cycles(graph) == []
    # the detector itself finds a cycle hidden in a function-level import
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_layers_point_down():
    graph = import_graph()
    below_training = [m for m in graph if m.startswith(("age_cgan.backend", "age_cgan.runs",
                                                        "age_cgan.config", "age_cgan.errors",
                                                        "age_cgan.aging", "age_cgan.data"))]
    for module in below_training:
        assert not any(t.startswith(("age_cgan.training", "age_cgan.cli")) for t in graph[module]), \
            module
    for module, targets in graph.items():  # only the command lines import the command lines
        if not module.startswith(("age_cgan.cli", "age_cgan.app")):  # the page is one too
            assert not any(t.startswith("age_cgan.cli") for t in targets), module
    # the page's handler shares its helpers with infer.py below both (the age parser, the grid)
    assert not any(t.startswith("age_cgan.cli") for t in graph["age_cgan.app_handler"])


def test_only_the_backend_layer_names_a_backend():
    for path in PACKAGE.rglob("*.py"):
        if "backend" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                assert not any(n.split(".")[0] in ("tensorflow", "jax") for n in names), path


def test_every_module_stays_small():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 450, {k: v for k, v in sizes.items() if v > 450}


def test_another_keras_backend_is_refused_by_name():
    from age_cgan.backend import UnsupportedBackend, engine

    with pytest.raises(UnsupportedBackend, match="'torch' is not supported.*jax, tensorflow"):
        engine("torch")
    assert engine("tensorflow").__name__ == "age_cgan.backend.tensorflow_step"


def test_the_stage_graph_comes_from_the_stage_declarations(tmp_path):
    from age_cgan.runs import MissingModel, RunFolder
    from age_cgan.training import STAGE_CLASSES, maker_of
    from age_cgan.training.graph import check_ready, missing_models

    assert list(STAGE_CLASSES) == ["1", "2", "fr", "3", "age", "aging"]
    for network in ("generator", "discriminator", "encoder", "face_recognizer", "age_estimator",
                    "aging_network", "aging_discriminator"):
        assert network in STAGE_CLASSES[maker_of(network)].trains
    assert (maker_of("generator"), maker_of("encoder"), maker_of("face_recognizer"),
            maker_of("age_estimator"), maker_of("aging_network")) == \
        ("1", "2", "fr", "age", "aging")
    run, plain = RunFolder(tmp_path), TrainConfig()
    finetune = plain.replace(finetune_generator=True)
    assert missing_models(run, "3", plain) == ["encoder", "generator"]
    assert missing_models(run, "3", finetune) == ["encoder", "generator", "discriminator"]
    assert STAGE_CLASSES["3"].trains_for(finetune) == ("encoder", "generator")
    check_ready(run, ("1", "2", "3"), plain)  # each stage makes what the next needs
    with pytest.raises(MissingModel) as missing:
        check_ready(run, ("2",), plain)
    assert missing.value.network == "generator"
    assert f"`python train.py --stage 1 --run {tmp_path}`" in cli_message(missing.value)
    assert missing_models(run, "aging", plain) == ["age_estimator"]  # the aging network's
    check_ready(run, ("age", "aging"), plain)
    with pytest.raises(MissingModel) as missing:
        check_ready(run, ("aging",), plain)
    assert f"`python train.py --stage age --run {tmp_path}`" in cli_message(missing.value)


def test_every_setting_is_an_option_of_train_py():
    from age_cgan.cli.train import config_from_args, parser, setting_help

    hints = typing.get_type_hints(TrainConfig)
    help_text = " ".join(parser().format_help().split())
    for field in dataclasses.fields(TrainConfig):
        option = "--" + field.name.replace("_", "-")
        kinds = typing.get_args(hints[field.name]) or (hints[field.name],)
        if bool in kinds:
            argv = [f"--no-{option[2:]}" if field.default is True else option]
            expected = not field.default if field.default is not None else True
        else:
            value = {"stage": "fr", "arch": "lite", "devices": "2", "age_bins": "20-30,40-50",
                     "test_fraction": "0.2", "image_size": "32",
                     "aging_size": "128"}.get(field.name, "8")
            argv = [option, value]
            expected = (int(value) if int in kinds and value.isdigit()
                        else float(value) if float in kinds else value)
        config = config_from_args(parser().parse_args(argv))
        assert getattr(config, field.name) == expected, field.name
        assert " ".join(setting_help(field).split()) in help_text, field.name  # one source
        assert "\x1f" not in setting_help(field), field.name  # markers worded as flags


def test_config_json_is_read_back_into_train_config(tmp_path):
    from age_cgan.runs import RunFolder

    config = TrainConfig(run=str(tmp_path), arch="lite", fr_margin=0.3, devices=2, batch_size=8)
    (tmp_path / "config.json").write_text(json.dumps({**config.to_dict(), "backend": "jax"}))
    assert RunFolder(tmp_path).train_config() == config
    assert RunFolder(tmp_path).train_config(stage="2").stage == "2"


def test_a_setting_error_names_the_setting_and_the_cli_its_flag():
    with pytest.raises(ValueError) as refused:
        TrainConfig(fr_margin=-1)
    assert str(refused.value) == "fr_margin must be at least 0, got -1"
    assert cli_message(refused.value) == "--fr-margin must be at least 0, got -1"
    from age_cgan.errors import AgeCganError, command, setting

    error = AgeCganError(f"pass {setting('resume', True)} or {setting('progress', False)}; "
                         f"then {command('infer', run='r', method='pixel')}")
    assert str(error) == "pass resume=True or progress=False; then infer(run='r', method='pixel')"
    assert cli_message(error) == ("pass --resume or --no-progress; then "
                                  "`python infer.py --run r --method pixel`")


# --------------------------------------------------------------------------- every command's help


def _script_parser(relative: str):
    """The parser() of a script in tools/ or benchmarks/, imported from its file."""
    import importlib.util

    path = PACKAGE.parent / relative
    spec = importlib.util.spec_from_file_location(f"_help_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser()


def all_parsers() -> dict:
    """Every command's parser, by how a user starts it."""
    from age_cgan import app
    from age_cgan.cli import demo, evaluate, infer, train
    from age_cgan.data import __main__ as data

    parsers = {"train.py": train.parser(), "infer.py": infer.parser(),
               "evaluate.py": evaluate.parser(), "demo.py": demo.parser(),
               "age-cgan-app": app.parser(), "python -m age_cgan.data": data.parser(),
               "python -m age_cgan.data prepare": data.prepare_parser()}
    scripts = sorted(p.relative_to(PACKAGE.parent).as_posix()
                     for folder in ("tools", "benchmarks")
                     for p in (PACKAGE.parent / folder).glob("*.py"))
    assert len(scripts) >= 7, scripts
    parsers.update({script: _script_parser(script) for script in scripts})
    return parsers


def test_every_help_renders_as_written():
    """argparse %-formats each help with the option's fields: a stray "%" ("40% slower")
    prints a Python dictionary instead, and a broken format string fails the whole --help."""
    import re

    for name, parser in all_parsers().items():
        rendered = parser.format_help()  # raises on a broken format string
        flat = "".join(rendered.split())  # no spaces: argparse wraps at hyphens too
        assert "option_strings" not in flat and "%(" not in flat and "%%" not in flat, name
        for action in parser._actions:
            text = re.sub(r"%\((\w+)\)s", "", action.help or "").replace("%%", "%")
            words = "".join(text.split())[:60]
            assert words in flat, (name, action.dest, words)
        for part in (parser.description or "", parser.usage or ""):
            assert "%(" not in part.replace("%(prog)s", ""), name


def test_every_option_of_every_command_has_help():
    import re

    for name, parser in all_parsers().items():
        rendered = " ".join(parser.format_help().split())
        for noise in ("(default: None)", "(default: True)", "(default: False)",
                      "(default: SUPPRESS)"):
            assert noise not in rendered, (name, noise)
        for action in parser._actions:
            flag = "/".join(action.option_strings) or action.dest
            assert (action.help or "").strip(), f"{name} {flag} has no help"
            if action.option_strings and all(o.startswith("--no-")
                                             for o in action.option_strings):
                # a negative switch (not a --X / --no-X pair) says what it turns off
                assert re.search(r"\bturns? (it )?off\b", action.help), (name, flag)
    assert "--share" in all_parsers()["age-cgan-app"].format_help()


def test_help_says_the_defaults_that_apply():
    from age_cgan.cli import demo, evaluate, infer

    out = " ".join(infer.parser().format_help().split())
    assert "aged/ in the current folder for the shipped model" in out  # _default_out's rule
    demo_help = " ".join(demo.parser().format_help().split())
    assert "``" not in demo_help and "four stages" in demo_help
    assert all(f"{stage} = " in demo_help for stage in ("1", "2", "fr", "3", "age", "aging"))
    assert "(default: True)" not in evaluate.parser().format_help()
    parsers = all_parsers()
    usage = parsers["python -m age_cgan.data"].format_usage()
    assert "python -m age_cgan.data prepare UTKFACE_DIR OUT_DIR" in usage  # not hidden
    app_help = " ".join(parsers["age-cgan-app"].format_help().split())
    assert "its default method" in app_help and "Age-cGAN" not in app_help


def test_train_py_lists_its_stages_once_in_training_order():
    from age_cgan.cli.train import DESCRIPTION, parser
    from age_cgan.config import STAGE_GROUPS, STAGE_ORDER
    from age_cgan.training import STAGE_CLASSES

    assert tuple(STAGE_CLASSES) == STAGE_ORDER  # the help's order is the training order
    text = " ".join(parser().format_help().split())
    positions = [text.index(f"; {stage} = " if i else f"{stage} = ")
                 for i, stage in enumerate(STAGE_ORDER)]
    assert positions == sorted(positions)
    for group, stages in STAGE_GROUPS.items():
        assert f"{group} = {', '.join(stages)} (" in text
    assert set(STAGE_GROUPS["all"]) == set(STAGE_ORDER)  # all means every stage
    assert "1 = " not in DESCRIPTION and "fr = " not in DESCRIPTION  # one list, in --stage


def test_the_readme_reads_in_five_minutes_and_keeps_its_two_commands():
    """The README: what it does, the two commands, what you will see, using it, a GPU, more;
    the figures live in docs/evaluation.md and the model card, which it links."""
    readme = (PACKAGE.parent / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "pip install . && python infer.py age_cgan/examples/astronaut.jpg --out aged.png" \
        in readme
    assert 'pip install -e ".[test,eval,app]" && python -m pytest' in readme
    assert "docs/evaluation.md#the-shipped-models-figures" in readme
    assert "MODEL_CARD.md" in readme and "| method" not in readme  # no table of figures
    figures = (PACKAGE.parent / "docs" / "evaluation.md").read_text()
    assert "## The shipped model's figures" in figures and "89.6%" in figures
