"""Speed and scale: loop-aware stopping on a real tiny model, real-size architectures (no weights),
the vLLM backend's interface, and sweeps through the submitit launcher."""
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from degenbench.models import families
from degenbench.config import CONF_DIR, ROOT, compose
from degenbench.documents import synthetic
from degenbench.decoding.generate import generate
from degenbench.decoding.loopstop import LoopStop
from degenbench.metrics import score_output
from degenbench.metrics.degeneration import is_degenerate
from degenbench.stages.graph import run_job


@pytest.fixture(scope="module")
def base():
    cfg = compose(["family=qwen2.5-vl-3b", "device=cpu"])
    model, processor = families.load(cfg.family, "cpu")
    return cfg, model, processor


def test_loop_stop_cuts_a_row_when_it_meets_the_rule_and_leaves_others(base):
    cfg, _, processor = base
    tok = processor.tokenizer
    loop = tok('{"text": "Soma ' + "." * 120, add_special_tokens=False).input_ids
    truths = " ".join(d.text for d in synthetic.generate(8, seed=1, cols=16, margin_cols=5))
    plain = tok(truths, add_special_tokens=False).input_ids  # eight pages: no 15 characters 4 times
    n = min(len(loop), len(plain))
    assert n == len(loop)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    ended = loop[:3] + [eos] + loop[4:]  # ended on its own: never cut, whatever follows
    prompt = [7, 8, 9]
    budget = 400  # with min_run, a loop is cut once it spans a quarter of the budget: 100 tokens of dots, after the tail test (60)
    stop = LoopStop(tok, len(prompt), {eos}, tail_chars=15, min_repeats=4, min_copies=0, min_run=0.25, budget=budget)
    first_dot = tok.decode(loop).index(".")
    expect = False
    for k in range(1, n + 1):
        ids = torch.tensor([prompt + loop[:k], prompt + plain[:k], prompt + ended[:k]])
        dots = sum(len(tok.decode(loop[:j + 1])) > first_dot for j in range(k))  # tokens that reach the dots
        expect = expect or (is_degenerate(tok.decode(loop[:k]), True) and dots >= budget // 4)  # cut rows stay cut
        assert stop(ids, None).tolist() == [expect, False, False]
    assert expect
    # the row texts grow token by token (incremental decoding): the same text as decoding it whole,
    # accented characters split over byte tokens included
    assert stop.texts[1] == tok.decode(plain[:n], skip_special_tokens=True) and any(ord(c) > 127 for c in stop.texts[1])
    cut = stop.stopped_at[0]
    assert is_degenerate(tok.decode(loop[:cut]), True) and is_degenerate(tok.decode(loop[:cut - 1]), True)  # it waited


def test_generate_with_loop_stop_cuts_looping_rows_to_a_prefix_of_the_full_output(base):
    """A rule loose enough (2 characters twice, a loop of 2 copies) that the tiny base meets it on
    ordinary pages: cut rows are prefixes of the full-length greedy output, every other row is unchanged."""
    cfg, model, processor = base
    pages = [d.load_image() for d in synthetic.generate(6, seed=5, cols=16, margin_cols=5, body_lines=2)]
    gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": 40, "loop_rule": {"tail_chars": 2, "min_repeats": 2,
                                                                              "min_copies": 2, "min_run": 0.05}})
    full = generate(model, processor, cfg.family, pages, gen)
    cut = generate(model, processor, cfg.family, pages, OmegaConf.merge(gen, {"loop_stop": True}))
    assert any(o.loop_stopped for o in cut)
    for f, c in zip(full, cut):
        if c.loop_stopped:
            assert f.token_ids[:len(c.token_ids)] == c.token_ids and c.new_tokens < f.new_tokens
            assert is_degenerate(c.text, True, 2, 2) and not c.hit_limit
        else:
            assert c.token_ids == f.token_ids
    doc = synthetic.generate(1, seed=5, cols=16, margin_cols=5, body_lines=2)[0]
    m = OmegaConf.merge(cfg.metrics, {"tail_chars": 2, "min_repeats": 2})
    stopped = next(o for o in cut if o.loop_stopped)
    assert score_output(doc, stopped.text, False, stopped.token_ids, m, loop_stopped=True)["degenerate"]


@pytest.mark.parametrize("family, params", [("qwen2.5-vl-3b", 3.75e9), ("qwen2.5-vl-7b", 8.29e9),
                                            ("nanonets-ocr2-3b", 3.75e9), ("olmocr-2-7b", 8.29e9),
                                            ("gemma-3-4b", 4.30e9)])
def test_real_size_architectures_have_the_published_parameter_counts(family, params):
    cfg = compose([f"family={family}", "family.size=shape"])
    with torch.device("meta"):  # no memory, no weights: the architecture alone
        model = families.shape_model(cfg.family)
    assert type(model).__name__ == cfg.family.model_class.rsplit(".", 1)[1]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)


def test_random_weight_models_never_run_a_reported_job():
    with pytest.raises(ValueError, match="random weights"):
        run_job(compose(["family.size=shape", "logger=disabled"]))


@pytest.mark.parametrize("name, fsdp", [("ddp", False), ("fsdp", True)])
def test_accelerate_configs_give_the_launch_environment_they_promise(name, fsdp):
    """launch.train's `accelerate launch --config_file ...`, through accelerate's own argument
    validation and environment building (what its launcher hands each rank): bf16, and for FSDP
    version 2 with full sharding and sharded checkpoints (checkpoint.fsdp_resume)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    argv = ["--config_file", str(ROOT / "experiments/accelerate" / f"{name}.yaml"), "--num_processes", "2",
            "-m", "degenbench.stages.launch", "job.yaml"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and args.num_processes == 2
    assert (env.get("ACCELERATE_USE_FSDP") == "true") == fsdp
    if fsdp:
        assert (env["FSDP_VERSION"], env["FSDP_STATE_DICT_TYPE"]) == ("2", "SHARDED_STATE_DICT")


def test_slurm_launcher_settings_are_accepted_by_submitit(tmp_path, monkeypatch):
    """conf/hydra/launcher/slurm.yaml as Hydra composes it, handed to submitit's SLURM executor
    the way hydra-submitit-launcher does (generic keys as they are, the rest slurm_-prefixed):
    a key submitit does not know fails here; the sbatch script asks for what the file says.
    No cluster here: a stub `srun` on PATH lets the executor be created."""
    import os

    import submitit
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                            return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    executor = submitit.AutoExecutor(folder=tmp_path / "sub", cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("degenbench", "0")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=16", "--time=720", "--mem=120GB"):
        assert f"#SBATCH {line}" in script, line


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_two_job_sweep_through_submitit_local(tmp_path):
    cmd = [sys.executable, "-m", "degenbench", "-m", "hydra/launcher=local", f"paths.results_dir={tmp_path}",
           "logger=disabled", "device=cpu", "data.n_docs=4", "data.heldout=2", "data.max_new_tokens=8",
           "family=qwen2.5-vl-3b,gemma-3-4b"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.name.split("-tiny-")[0] for p in (tmp_path / "runs").iterdir() if (p / "_COMPLETE.json").is_file())
    assert runs == ["gemma-3-4b", "qwen2.5-vl-3b"]
    assert list(tmp_path.glob("hydra/multirun_*/.submitit/*/*_result.pkl"))  # each ran as a submitit job
