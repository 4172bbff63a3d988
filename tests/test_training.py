"""Training data and the training loop: views are geometrically right, damage is as
configured, a tiny run lowers the loss and resumes from its checkpoint."""


import numpy as np
import pytest
import torch

from engines.body.body_model import BodyModel
from engines.training.synthetic_views import COCO_IN_BLAZEPOSE, ViewConfig, make_views
from engines.training.train import MocapPoses, train

torch.set_num_threads(2)


def tiny_dataset(path, frames=200):
    rng = np.random.default_rng(0)
    poses = (rng.standard_normal((frames, 72)) * 0.15).astype(np.float32)
    poses[:, 16 * 3 + 2], poses[:, 17 * 3 + 2] = -1.2, 1.2  # arms down
    clip_id = np.repeat([0, 1], frames // 2).astype(np.int32)
    np.savez(path, poses=poses, trans=np.zeros((frames, 3), np.float32), clip_id=clip_id,
             clip_heldout=np.array([False, True]))


def test_views_project_the_body_into_the_image_and_damage_as_configured():
    body = BodyModel.load()
    g = torch.Generator().manual_seed(0)
    poses = torch.zeros(64, 72)
    clean = ViewConfig(jitter_frac=(0, 0), outlier_prob=0, drop_prob_max=0, limb_drop_prob=0, coco_only_prob=0,
                       inside_prob=1.0, person_height_frac=(0.3, 0.5), outside_keep_prob=1.0)
    v = make_views(body, poses, clean, g)
    assert v.x0.shape == (64, 154) and v.keypoints.shape == (64, 33, 3)
    assert (v.joints_cam[:, 0, 2] >= 0.8 - 1e-5).all() and (v.joints_cam[..., 2] > 0).all()  # in front
    torch.testing.assert_close(v.keypoints_px[..., :2], v.clean_px)  # no noise asked, none added
    # Normalised coordinates are the pixels through the intrinsics.
    f, c = v.K[:, 0, 0][:, None, None], v.K[:, :2, 2][:, None]
    torch.testing.assert_close(v.keypoints[..., :2] * f + c, v.clean_px, atol=1e-3, rtol=1e-4)
    height = (v.clean_px[..., 1].amax(1) - v.clean_px[..., 1].amin(1)) / v.image_size[:, 1]
    assert 0.2 < height.median() < 0.6

    coco = make_views(body, poses, ViewConfig(coco_only_prob=1.0), g)
    not_coco = torch.ones(33, dtype=torch.bool)
    not_coco[COCO_IN_BLAZEPOSE] = False
    assert (coco.keypoints[:, not_coco, 2] == 0).all()
    noisy = make_views(body, poses, ViewConfig(), g)
    missing = noisy.keypoints[..., 2] == 0
    assert 0.02 < missing.float().mean() < 0.6
    assert (noisy.keypoints[..., :2][missing] == 0).all()


def test_tiny_training_run_lowers_the_loss_and_resumes(tmp_path):
    data = tmp_path / "poses.npz"
    tiny_dataset(data)
    assert len(MocapPoses(data)) == 100 and len(MocapPoses(data, heldout=True)) == 100
    from engines.training.train import build_parser

    args = build_parser().parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "60",
                                      "--batch", "32", "--lr", "2e-3", "--width", "64", "--depth", "1",
                                      "--threads", "2", "--log-every", "10", "--save-every", "30", "--device", "cpu"])
    train(args)
    import json

    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["step"] == 60
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], history
    assert (tmp_path / "run" / "denoiser.pt").exists() and (tmp_path / "run" / "loss.png").exists()
    args.steps = 70  # resume from step 60; the run keeps its own network whatever the flags say
    args.depth = 3
    train(args)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["depth"] == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history][-2:] == [60, 70]
    # A new run from the exported weights (how training goes on once a run directory is
    # gone): their network whatever the flags say, and it starts where they ended.
    scratch_first = history[0]["loss"]
    args.out, args.init, args.steps = str(tmp_path / "again"), str(tmp_path / "run" / "denoiser.pt"), 10
    train(args)
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["config"]["depth"] == 1 and again["init"]["weights"].endswith("denoiser.pt")
    first = json.loads((tmp_path / "again" / "history.json").read_text())[0]["loss"]
    assert first < 0.8 * scratch_first, (first, scratch_first)


def test_sampler_timesteps_sit_where_the_samplers_step():
    from engines.diffusion.schedule import DDIMScheduler
    from engines.training.train import SAMPLER_TIMES, draw_timesteps

    sched = DDIMScheduler()
    t = draw_timesteps(20000, sched, torch.Generator().manual_seed(0), "sampler", uniform_share=0.3, jitter=25)
    def near(times):  # within 30 steps (1.2 sigma of the jitter) of a sampler time
        return ((times[:, None] - torch.tensor(SAMPLER_TIMES)[None]).abs().amin(1) <= 30).float().mean()

    # 70 % drawn around them (77 % of those within 1.2 sigma), plus the uniform share that
    # happens to fall there (35 % of the range)
    assert 0.58 < near(t) < 0.72
    assert t.min() >= 0 and t.max() <= 999
    # every K-step DDIM time at K = 1, 2, 4 is among them
    for K in (1, 2, 4):
        assert {s for s, _ in sched.timesteps(K)} <= set(SAMPLER_TIMES)
    uniform = draw_timesteps(20000, sched, torch.Generator().manual_seed(0), "uniform")
    assert 0.3 < near(uniform) < 0.4


def test_evaluate_lifter_calibrates_the_spread_and_takes_world_landmarks(tmp_path):
    """--calibrate writes a per-K temperature that makes error / spread 1 on the same frames;
    --world-landmarks and --keypoints clean run on the bundled network."""
    import json
    import shutil

    from engines.diffusion.weights import DEFAULT_WEIGHTS
    from engines.training.evaluate import main as evaluate_main

    data = tmp_path / "poses.npz"
    tiny_dataset(data)
    weights = tmp_path / "denoiser.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    info = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    for key in [k for k in info if k.startswith("spread_temperature")]:
        info.pop(key)
    weights.with_suffix(".json").write_text(json.dumps(info))
    common = ["--data", str(data), "--weights", str(weights), "--frames", "48", "--samples", "4", "--steps", "1",
              "--threads", "2"]
    world = ["--world-landmarks"] if info["config"].get("world_landmarks") else []
    assert evaluate_main(common + world + ["--calibrate"]) == 0
    temperature = json.loads(weights.with_suffix(".json").read_text())["spread_temperature"]
    assert set(temperature) == {"1"} and temperature["1"] > 1  # one step's samples are too narrow
    out = tmp_path / "report.json"
    assert evaluate_main(common + world + ["--json", str(out)]) == 0
    assert abs(json.loads(out.read_text())["steps"]["1"]["error_over_spread"] - 1) < 0.02
    if world:  # the same network lifting from the 2D alone gets a table of its own
        assert evaluate_main(common + ["--calibrate"]) == 0
        info = json.loads(weights.with_suffix(".json").read_text())
        assert info["spread_temperature"] == temperature and set(info["spread_temperature_2d"]) == {"1"}
        assert evaluate_main(common + ["--json", str(out)]) == 0
        assert abs(json.loads(out.read_text())["steps"]["1"]["error_over_spread"] - 1) < 0.02
    assert evaluate_main(common + ["--keypoints", "clean", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["keypoints"] == "clean"


def test_world_absent_share_withholds_landmarks_and_the_probe_measures_both_ways(tmp_path):
    """``--world-absent`` sets how many training views lift from the 2D alone, and the probe
    of a landmark network reports its error with and without them (the 2D-only path is
    what issue 17's targets are read on)."""
    from engines.diffusion.denoiser import DenoiserConfig, build_denoiser
    from engines.diffusion.features import WORLD_COND_DIM
    from engines.diffusion.schedule import DDIMScheduler
    from engines.training.train import HeldoutProbe, build_parser, view_condition

    body = BodyModel.load()
    g = torch.Generator().manual_seed(0)
    views = make_views(body, torch.zeros(400, 72), ViewConfig(), g)
    flag = WORLD_COND_DIM - 1  # the condition's last number: landmarks given or not

    def absent(share):
        return float((view_condition(views, g, True, absent_share=share)[:, flag] == 0).float().mean())

    assert absent(1.0) == 1.0
    assert 0.5 < absent(0.7) < 0.85 and absent(0.0) < 0.1  # the error model drops a few frames itself
    assert build_parser().parse_args(["--data", "d", "--out", "o", "--world-absent", "0.6"]).world_absent == 0.6

    data = tmp_path / "poses.npz"
    tiny_dataset(data)
    model = build_denoiser(DenoiserConfig(width=32, depth=1, world_landmarks=True, cond_dim=WORLD_COND_DIM))
    probe = HeldoutProbe(data, body, torch.device("cpu"), frames=16, samples=2, steps=(1,), world=True)
    out = probe(model, DDIMScheduler())
    assert {"probe_k1_pa_mpjpe_mm", "probe_2d_k1_pa_mpjpe_mm"} <= set(out)
    assert out["probe_k1_mpjpe_mm"] != out["probe_2d_k1_mpjpe_mm"]


def test_ema_is_kept_checkpointed_probed_and_exported(tmp_path):
    """``--ema``: the exported weights are the moving average (not the last step's), the
    checkpoint carries it for a resumed run, and the probe reports both."""
    import json

    from engines.diffusion.weights import load_denoiser
    from engines.training.train import build_parser

    data = tmp_path / "poses.npz"
    tiny_dataset(data)
    args = build_parser().parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "20",
                                      "--batch", "16", "--lr", "2e-3", "--width", "32", "--depth", "1",
                                      "--threads", "2", "--log-every", "10", "--save-every", "10",
                                      "--probe-every", "10", "--device", "cpu", "--ema", "0.9", "--no-onnx"])
    train(args)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.dim() == 2)
    assert not torch.allclose(ckpt["ema"][name], ckpt["model"][name])  # an average, not a copy
    shipped = load_denoiser(tmp_path / "run" / "denoiser.pt").state_dict()[name]
    torch.testing.assert_close(shipped, ckpt["ema"][name].half().float())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {"probe_k4_pa_mpjpe_mm", "raw_probe_k4_pa_mpjpe_mm"} <= set(history[-1])
    assert json.loads((tmp_path / "run" / "denoiser.json").read_text())["ema_decay"] == 0.9
    args.steps = 30  # resumed: the average goes on from the checkpoint's, not from a copy
    train(args)
    resumed = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 30 and resumed["ema_updates"] == 30
    assert not torch.allclose(resumed["ema"][name], resumed["model"][name])
    with pytest.raises(SystemExit, match="between 0 and 1"):
        train(build_parser().parse_args(["--data", str(data), "--out", str(tmp_path / "bad"), "--ema", "1.5",
                                         "--device", "cpu", "--steps", "1"]))


def test_average_lifter_means_the_weights_of_runs_from_one_start_and_refuses_others(tmp_path):
    """``average-lifter`` writes the mean of runs' weights, loadable as any lifter, and
    refuses runs that did not start from the same weights."""
    import json

    from engines.diffusion.denoiser import DenoiserConfig, build_denoiser
    from engines.diffusion.weights import load_denoiser
    from engines.training.soup import main as soup_main
    from engines.training.train import export

    config = DenoiserConfig(width=32, depth=1)
    runs = []
    for seed, start in ((1, "a" * 64), (2, "a" * 64), (3, "b" * 64)):
        torch.manual_seed(seed)
        out = tmp_path / f"run{seed}"
        out.mkdir()
        export(build_denoiser(config), {"config": config.to_dict(), "seed": seed,
                                        "init": {"weights": "w.pt", "sha256": start}}, [], out, onnx=False)
        runs.append(out / "denoiser.pt")
    assert soup_main([str(runs[0]), str(runs[1]), "--out", str(tmp_path / "soup"), "--no-onnx"]) == 0
    soup = load_denoiser(tmp_path / "soup" / "denoiser.pt").state_dict()
    a, b = (load_denoiser(r).state_dict() for r in runs[:2])
    name = next(k for k, v in soup.items() if v.dim() == 2)
    torch.testing.assert_close(soup[name], ((a[name] + b[name]) / 2).half().float())
    info = json.loads((tmp_path / "soup" / "denoiser.json").read_text())
    assert [r["seed"] for r in info["soup_of"]] == [1, 2] and info["config"] == config.to_dict()
    with pytest.raises(SystemExit, match="same weights"):
        soup_main([str(runs[0]), str(runs[2]), "--out", str(tmp_path / "bad"), "--no-onnx"])


def test_bf16_training_matches_fp32_on_the_shipped_network_and_is_refused_where_not_native(monkeypatch):
    """The network under bf16 autocast gives the fp32 loss and gradient direction on real
    views (the body model and losses stay fp32); without native bf16 the flag is refused."""
    from engines.diffusion.schedule import DDIMScheduler
    from engines.diffusion.weights import load_denoiser
    from engines.training import train as train_module
    from engines.training.synthetic_views import WORLD_NOISE

    body = BodyModel.load()
    model = load_denoiser(None).float().train()
    views = make_views(body, torch.zeros(64, 72), ViewConfig(), torch.Generator().manual_seed(0))
    results = []
    for dtype in (None, torch.bfloat16):
        model.zero_grad()
        loss, parts = train_module.training_loss(model, body, DDIMScheduler(), views, torch.Generator().manual_seed(1),
                                                 timesteps="sampler", world_noise=WORLD_NOISE["limbs"],
                                                 matmul_dtype=dtype)
        assert loss.dtype == torch.float32
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.item(), grad))
    (loss32, grad32), (loss16, grad16) = results
    assert abs(loss16 - loss32) < 0.02 * loss32, (loss16, loss32)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.98
    assert not torch.equal(grad16, grad32)  # autocast did run the network in bf16
    cpu = torch.device("cpu")
    assert train_module.resolve_precision("fp32", cpu) is None
    monkeypatch.setattr(train_module, "native_bf16", lambda device: False)
    assert train_module.resolve_precision("auto", cpu) is None
    with pytest.raises(SystemExit, match="no native bf16"):
        train_module.resolve_precision("bf16", cpu)
