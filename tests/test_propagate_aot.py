"""AOT / DeAOT propagation on the CPU: the real deaotpy networks (small variants, and the
Swin-L models at a tiny input size) with random weights from a fixed seed, on generated
clips. The weights are random, so nothing is asserted about accuracy: these tests check
the structural contract (frames, key-frame copy, fallback, pass order, memory reuse,
views, determinism) and checkpoint loading."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import tree_bytes
from test_propagate import cli_args, make_dataset

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.propagate import make_backend, propagate
from rvos_kit.stages.propagate.frames import VideoFrames
from rvos_kit.trees.masktree import decode_values, read_mask
from rvos_kit.trees.meta import load_meta

torch = pytest.importorskip("torch")
aot_backend = pytest.importorskip("rvos_kit.stages.propagate.aot_backend")
# the CLI runs the stage as shards on Ray: the session's local Ray (logical GPUs), not one
# this module happens to find started by an earlier test module
pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a small shared CI machine, OpenMP threads spinning against
    other processes make these tiny networks tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {
    "v1": {
        "size": (40, 56),
        "frames": 4,
        "exps": {"0": (1, "true"), "1": (0, "empty"), "2": (3, "true")},
    },
    "v2": {"size": (36, 52), "frames": 3, "exps": {"0": (0, "true")}},
}


def _run(root, out, backend):
    return propagate(
        root / "JPEGImages",
        root / "Annotations",
        root / "key_frame.json",
        root / "meta.json",
        out,
        backend,
        progress=False,
    )


# ------------------------------------------------------------------------ views
def test_view_sizes_follow_the_published_rule():
    vs = aot_backend.view_size
    # 1280x720 -> long side 1040 (585 x 1040), then x scale, then multiples of 16 (Swin)
    assert [vs(720, 1280, s, 1040, False) for s in (0.8, 1.0, 1.2)] == [
        (464, 832),
        (592, 1040),
        (704, 1248),
    ]
    # 16 n + 1 for the align-corners models (mobilenet / resnet encoders)
    assert [vs(720, 1280, s, 1040, True) for s in (0.8, 1.0, 1.2)] == [
        (465, 833),
        (577, 1041),
        (705, 1249),
    ]
    # smaller frames are not enlarged before scaling; portrait frames limit the height
    assert vs(480, 640, 1.0, 1040, False) == (480, 640)
    assert vs(1280, 720, 1.0, 1040, False) == (1040, 592)
    with pytest.raises(KitError, match="empty view"):
        vs(8, 8, 0.1, 1040, False)


# ---------------------------------------------------------------- the contract
def test_aot_small_model_contract_and_determinism(tmp_path):
    make_dataset(tmp_path, TINY)
    backend = make_backend("aot", model="aott", random_seed=0, device="cpu")
    assert [(s, f) for s, f in backend.views] == [
        (0.8, False),
        (0.8, True),
        (1.0, False),
        (1.0, True),
        (1.2, False),
        (1.2, True),
    ]
    s = _run(tmp_path, tmp_path / "a", backend)
    assert (s.expressions, s.propagated, s.copied_empty, s.masks) == (4, 3, 1, 15)
    assert backend.engines_built == 6 * 3  # one engine per view, per propagated expression

    src, out = tmp_path / "Annotations", tmp_path / "a"
    got = tree_bytes(out)
    assert sorted(got) == sorted(str(p.relative_to(src)) for p in src.rglob("*.png"))
    meta = load_meta(tmp_path / "meta.json")
    for v in meta:
        for e in v.exp_ids:
            k, kind = TINY[v.name]["exps"][e]
            for t, f in enumerate(v.frames):
                rel = f"{v.name}/{e}/{f}.png"
                if t == k or kind == "empty":
                    assert got[rel] == (src / rel).read_bytes(), rel
                else:
                    values = decode_values(got[rel], rel)
                    assert values.shape == TINY[v.name]["size"]
                    assert set(np.unique(values)) <= {0, 255}

    # Same seed through the CLI: the same bytes (determinism, and the CLI wiring).
    argv = cli_args(tmp_path, tmp_path / "b", "--backend", "aot", "--model", "aott")
    # (spelled as dvc.yaml spells the published settings)
    published = ["--scales", "0.8,1.0,1.2", "--flip", "--max-long-side", "1040"]
    assert main([*argv, "--random-weights", "0", "--device", "cpu", *published]) == 0
    assert tree_bytes(tmp_path / "b") == got


def _memory_entries(backend):
    """Long-term memory length (in frames) of every view's engine."""
    out = []
    for engine in backend.last_engines:
        tokens = engine.enc_hw
        key = engine.long_term_memories[0][0]  # layer 0, key
        assert key.shape[0] % tokens == 0
        out.append(key.shape[0] // tokens)
    return out


@pytest.mark.parametrize("name,model", [("aot", "aott"), ("deaot", "deaott")])
def test_forward_then_backward_reusing_the_engines(tmp_path, name, model):
    make_dataset(
        tmp_path,
        {"v": {"size": (36, 52), "frames": 5, "exps": {"0": (2, "true")}}},
    )
    meta = load_meta(tmp_path / "meta.json")
    ref = read_mask(tmp_path / "Annotations" / "v" / "0" / "00010.png") > 0
    frames = VideoFrames(tmp_path / "JPEGImages", meta.video("v"))
    # long-term gap 1: every propagated frame enters the long-term memory
    backend = make_backend(
        name, model=model, random_seed=1, device="cpu", scales=(1.0,), long_term_gap=1
    )
    order = []
    backend.propagate(frames, 2, ref, lambda t, m: order.append(t))
    assert order == [3, 4, 1, 0]  # forward k+1..T-1, then backward k-1..0
    # forward: reference + frames 3, 4; backward: reference again + frames 1, 0 -- all in
    # the same engines (a restarted engine would hold 3)
    assert _memory_entries(backend) == [1 + 2 + 1 + 2] * 2
    assert backend.engines_built == 2  # scale 1.0, unflipped and flipped

    # key frame first / last: one pass only, the reference added once (published
    # bidirectional_evaluator.py L288: no forward pass when k is the last frame)
    order.clear()
    backend.propagate(frames, 0, ref, lambda t, m: order.append(t))
    assert order == [1, 2, 3, 4] and _memory_entries(backend) == [5, 5]
    order.clear()
    backend.propagate(frames, 4, ref, lambda t, m: order.append(t))
    assert order == [3, 2, 1, 0] and _memory_entries(backend) == [5, 5]

    # the model's own gap (9999 for the tiny models): the reference, added twice
    backend = make_backend(name, model=model, random_seed=1, device="cpu", scales=(1.0,))
    backend.propagate(frames, 2, ref, lambda t, m: None)
    assert _memory_entries(backend) == [2, 2]


def test_swin_l_models_build_with_the_published_numbers_and_run(tmp_path):
    # two frames, key frame last: an empty forward pass, then the backward pass
    make_dataset(tmp_path, {"v": {"size": (32, 48), "frames": 2, "exps": {"0": (1, "true")}}})
    for name, model in (("aot", "swinl_aotl"), ("deaot", "swinl_deaotl")):
        backend = make_backend(name, model=model, random_seed=0, device="cpu")
        s = _run(tmp_path, tmp_path / name, backend)
        assert s.propagated == 1 and backend.engines_built == 6
        values = decode_values((tmp_path / name / "v" / "0" / "00000.png").read_bytes())
        assert values.shape == (32, 48) and set(np.unique(values)) <= {0, 255}
        key = tmp_path / "Annotations" / "v" / "0" / "00005.png"
        assert (tmp_path / name / "v" / "0" / "00005.png").read_bytes() == key.read_bytes()

        net, cfg = backend.model, backend.cfg
        enc = net.encoder
        assert enc.embed_dim == 192 and len(enc.layers) == 3  # stages 0..2 are built
        assert [len(layer.blocks) for layer in enc.layers] == [2, 2, 18]
        assert [layer.blocks[0].attn.num_heads for layer in enc.layers] == [6, 12, 24]
        assert enc.layers[0].blocks[0].window_size == 12
        table = enc.layers[0].blocks[0].attn.relative_position_bias_table
        assert tuple(table.shape) == (23 * 23, 6)
        assert net.encoder_projector.in_channels == 768
        assert cfg.MODEL_ENCODER_DIM == [192, 384, 768, 768] and cfg.MODEL_LSTT_NUM == 3
        assert cfg.TEST_LONG_TERM_MEM_GAP == 5 and cfg.STAGE_NAME == "PRE_YTB_DAV"
        assert len(net.LSTT.layers) == 3
        assert type(net).__name__ == ("AOT" if name == "aot" else "DeAOT")
        del backend, net


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_layouts_load_and_bad_files_fail(tmp_path):
    net1, _ = aot_backend.build_network("aott", seed=1)
    sd = net1.state_dict()
    layouts = {
        "plain.pth": sd,
        "wrapped.pth": {"state_dict": sd, "step": 100},
        "ddp.pth": {"model": {"module." + k: v for k, v in sd.items()}, "extra.key": 1},
    }
    for fname, obj in layouts.items():
        torch.save(obj, tmp_path / fname)
        net2, _ = aot_backend.build_network("aott", seed=2)
        assert aot_backend.load_checkpoint(net2, tmp_path / fname, "aott") == 0
        for k, v in net2.state_dict().items():
            assert torch.equal(v, sd[k]), (fname, k)
    # LSTT.mask_token (deaotpy / aot-benchmark have it, the published fork's network does
    # not; no forward pass uses it): both layouts load; the network keeps its own value
    assert "LSTT.mask_token" in sd
    published = {k: v for k, v in sd.items() if k != "LSTT.mask_token"}
    torch.save({"state_dict": published}, tmp_path / "published.pth")
    net2, _ = aot_backend.build_network("aott", seed=2)
    own_token = net2.state_dict()["LSTT.mask_token"].clone()
    assert aot_backend.load_checkpoint(net2, tmp_path / "published.pth", "aott") == 1
    got = net2.state_dict()
    assert torch.equal(got["LSTT.mask_token"], own_token)
    assert all(torch.equal(got[k], v) for k, v in published.items())

    def fails(path, *needles):
        net, _ = aot_backend.build_network("aott", seed=2)
        with pytest.raises(KitError) as e:
            aot_backend.load_checkpoint(net, path, "aott")
        for n in (str(path), *needles):
            assert n in str(e.value)

    data = (tmp_path / "plain.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    fails(tmp_path / "truncated.pth", "corrupt or truncated")
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    fails(tmp_path / "noise.pth", "not a readable PyTorch checkpoint")
    (tmp_path / "dir.pth").mkdir()
    fails(tmp_path / "dir.pth", "folder")
    fails(tmp_path / "absent.pth", "not found")
    deaot, _ = aot_backend.build_network("deaott", seed=1)
    torch.save(deaot.state_dict(), tmp_path / "deaot.pth")
    fails(tmp_path / "deaot.pth", "does not fit model 'aott'", "missing")
    # any other unexpected key is refused, named (the published loader dropped it silently)
    torch.save({**sd, "unused.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    fails(tmp_path / "extra.pth", "'unused.weight'", "does not have")
    # a DeAOT network has no mask_token: a checkpoint carrying one is refused for it
    dsd = deaot.state_dict()
    assert "LSTT.mask_token" not in dsd
    torch.save({**dsd, "LSTT.layers.0.bogus": torch.zeros(1)}, tmp_path / "deaot_extra.pth")
    net, _ = aot_backend.build_network("deaott", seed=2)
    with pytest.raises(KitError, match="LSTT.layers.0.bogus"):
        aot_backend.load_checkpoint(net, tmp_path / "deaot_extra.pth", "deaott")
    bad = dict(sd)
    key = next(k for k, v in sd.items() if v.ndim == 4)
    bad[key] = torch.zeros(1, 1, 1, 1)
    torch.save(bad, tmp_path / "shape.pth")
    fails(tmp_path / "shape.pth", key, "shape")
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "nosd.pth")
    fails(tmp_path / "nosd.pth", "no state dict")
    # a pickle with other Python objects: refused unless trusted (where torch can refuse)
    torch.save({"state_dict": sd, "when": np.float64(1.5)}, tmp_path / "objects.pth")
    net, _ = aot_backend.build_network("aott", seed=2)
    if "weights_only" in inspect.signature(torch.load).parameters:
        fails(tmp_path / "objects.pth", "--trust-checkpoint")
    assert aot_backend.load_checkpoint(net, tmp_path / "objects.pth", "aott", trust=True) == 0
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())


def test_checkpoint_through_the_cli_equals_the_same_weights(tmp_path, capsys):
    make_dataset(tmp_path, {"v": {"size": (36, 52), "frames": 3, "exps": {"0": (1, "true")}}})
    net, _ = aot_backend.build_network("aott", seed=3)
    torch.save(
        {"state_dict": {"module." + k: v for k, v in net.state_dict().items()}},
        tmp_path / "aott.pth",
    )
    base = [*cli_args(tmp_path, tmp_path / "r", "--backend", "aot"), "--model", "aott"]
    assert main([*base, "--random-weights", "3", "--scales", "1.0"]) == 0
    argv = cli_args(tmp_path, tmp_path / "c", "--backend", "aot")
    ckpt = str(tmp_path / "aott.pth")
    assert main([*argv, "--model", "aott", "--checkpoint", ckpt, "--scales", "1.0"]) == 0
    assert tree_bytes(tmp_path / "c") == tree_bytes(tmp_path / "r")
    # a checkpoint of the other architecture: one clear error, nothing written
    capsys.readouterr()
    argv = cli_args(tmp_path, tmp_path / "x", "--backend", "deaot")
    assert main([*argv, "--model", "deaott", "--checkpoint", str(tmp_path / "aott.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rvos-kit propagate: error: ") and "aott.pth" in err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial*"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_matches_the_contract(tmp_path):
    make_dataset(tmp_path, TINY)
    for name, model in (("aot", "aott"), ("deaot", "deaott")):
        backend = make_backend(name, model=model, random_seed=0, device="cuda")
        s = _run(tmp_path, tmp_path / name, backend)
        assert s.propagated == 3 and backend.engines_built == 18
        again = make_backend(name, model=model, random_seed=0, device="cuda")
        _run(tmp_path, tmp_path / f"{name}2", again)
        a, b = tree_bytes(tmp_path / name), tree_bytes(tmp_path / f"{name}2")
        assert a.keys() == b.keys()
        for rel, data in a.items():
            assert set(np.unique(decode_values(data, rel))) <= {0, 255}


# --------------------------------------------------------------- shared encoder
@pytest.mark.parametrize("name,model", [("aot", "aott"), ("deaot", "deaott")])
def test_shared_encoder_is_exact_and_encodes_each_frame_view_once(
    tmp_path, monkeypatch, name, model
):
    from rvos_kit.stages.propagate import features as feats

    # the CPU's budget is the available RAM less a margin: make it ample whatever the machine
    monkeypatch.setattr(feats, "ram", lambda: (64 * feats.GIB, 128 * feats.GIB))
    videos = {
        "v1": {"size": (36, 52), "frames": 5,
               "exps": {"0": (2, "true"), "1": (0, "true"), "2": (4, "true"), "3": (1, "empty")}},
        "v2": {"size": (40, 56), "frames": 3, "exps": {"0": (1, "true"), "1": (2, "true")}},
    }  # fmt: skip
    make_dataset(tmp_path, videos)
    views, runs = 6, {}
    for share, budget in ((True, 4096.0), (False, 4096.0), (True, 0.0)):
        backend = make_backend(name, model=model, random_seed=0, device="cpu",
                               share_encoder=share, encoder_cache_mb=budget)  # fmt: skip
        out = tmp_path / f"{share}-{budget}"
        _run(tmp_path, out, backend)
        runs[share, budget] = (tree_bytes(out), backend.encoder_calls)
    shared, plain, no_room = runs[True, 4096.0], runs[False, 4096.0], runs[True, 0.0]
    assert shared[0] == plain[0] == no_room[0]  # byte-identical masks
    # shared: each (frame, view) of a video once, however many expressions
    assert shared[1] == (5 + 3) * views
    # not shared: per expression, its frames plus the reference once per pass
    per_exp = [(5 - 1) + 2, (5 - 1) + 1, (5 - 1) + 1, (3 - 1) + 2, (3 - 1) + 1]
    assert plain[1] == no_room[1] == sum(per_exp) * views
    with pytest.raises(KitError, match="encoder-cache-mb"):
        make_backend(name, model=model, random_seed=0, encoder_cache_mb=float("nan"))


# ------------------------------------------------- shared encoder: the feature tiers
features = pytest.importorskip("rvos_kit.stages.propagate.features")
ONE_VIDEO = {"v1": {"size": (36, 52), "frames": 5,
                    "exps": {"0": (2, "true"), "1": (0, "true"), "2": (4, "true"),
                             "3": (1, "empty")}}}  # fmt: skip


@pytest.mark.parametrize("name,model", [("aot", "aott"), ("deaot", "deaott")])
def test_feature_tiers_device_host_recompute_are_exact_and_counted(
    tmp_path, monkeypatch, name, model
):
    """Device tier for 2 frames, the host tier's code path (forced on the CPU) for 2 more,
    the last frame recomputed: the masks stay byte-identical to sharing off, and every use
    of a (frame, view) is counted in exactly one place."""
    monkeypatch.setattr(features, "ram", lambda: (64 * features.GIB, 128 * features.GIB))
    make_dataset(tmp_path, ONE_VIDEO)
    plain = make_backend(name, model=model, random_seed=0, device="cpu", share_encoder=False)
    _run(tmp_path, tmp_path / "plain", plain)
    assert plain.encoder_stats() == {"encoder_calls": 96, "device_hits": 0, "host_hits": 0,
                                     "recomputes": 0}  # fmt: skip
    full = make_backend(name, model=model, random_seed=0, device="cpu")
    _run(tmp_path, tmp_path / "full", full)
    frame_bytes = full.features.device_used / 5  # every frame's 6 views: the same sizes
    assert frame_bytes == int(frame_bytes) > 0 and full.features.host_used == 0
    # uses per frame (6 views each): exp k=2: ref twice (both passes), 3, 4, 1, 0 once;
    # k=0: 0..4 once; k=4: 4..0 once -> frame 0: 3, 1: 3, 2: 4, 3: 3, 4: 3 (16 x 6 = 96)
    assert full.encoder_stats() == {"encoder_calls": 30, "device_hits": 66, "host_hits": 0,
                                    "recomputes": 0}  # fmt: skip
    two_frames = (2 * frame_bytes + 0.5) / 2**20  # MiB
    tiers = make_backend(name, model=model, random_seed=0, device="cpu",
                         encoder_cache_mb=two_frames, host_cache_mb=two_frames)  # fmt: skip
    tiers.host_tier = True  # the host tier's code path on the CPU (plain copies)
    _run(tmp_path, tmp_path / "tiers", tiers)
    # first encoded: 2, 3 (device), 4, 1 (host), 0 (no room: recomputed at its 2 later uses)
    assert tiers.encoder_stats() == {
        "encoder_calls": 30 + 2 * 6,
        "device_hits": (3 + 2) * 6,
        "host_hits": (2 + 2) * 6,
        "recomputes": 2 * 6,
    }
    held = {key: tier for key, (tier, _) in tiers.features._entries.items()}
    assert held == {(t, v): tier for t, tier in ((2, "device"), (3, "device"), (4, "host"),
                                                  (1, "host")) for v in range(6)}  # fmt: skip
    masks = tree_bytes(tmp_path / "plain")
    assert tree_bytes(tmp_path / "full") == masks
    assert tree_bytes(tmp_path / "tiers") == masks


def test_feature_budgets_come_from_the_measured_memory(monkeypatch):
    """Host memory budget: MemAvailable (plus what the cache just released) less
    max(2 GiB, 20 % of the RAM), capped by the option; a tiny or full machine gives 0."""
    G = features.GIB
    avail, total = features.ram()  # the real one reads /proc/meminfo here
    assert 0 < avail <= total
    monkeypatch.setattr(features, "ram", lambda: (10 * G, 20 * G))
    assert features.ram_budget(None) == 6 * G
    assert features.ram_budget(None, held=G) == 7 * G
    assert features.ram_budget(3 * 2**20) == 3 * 2**20
    monkeypatch.setattr(features, "ram", lambda: (G, 4 * G))
    assert features.ram_budget(None) == 0 == features.ram_budget(1024.0)
    monkeypatch.setattr(features, "ram", lambda: None)  # unknown: hold nothing
    assert features.ram_budget(None) == 0
    # CPU: the device tier is the RAM (measured per video); no host tier unless forced
    cache = features.FeatureCache(torch.device("cpu"), device_mb=None, host_mb=5.0)
    monkeypatch.setattr(features, "ram", lambda: (10 * G, 20 * G))
    cache.start_video("v")
    assert (cache.device_budget, cache.host_budget, cache.host_tier) == (6 * G, 0, False)
    off = features.FeatureCache(torch.device("cpu"), share=False)
    off.start_video("v")
    assert off.device_budget == off.host_budget == 0
    with pytest.raises(KitError, match="host-cache-mb"):
        make_backend("aot", model="aott", random_seed=0, host_cache_mb=-1.0)


def test_cuda_device_room_keeps_the_reserve_free(monkeypatch):
    """The CUDA device tier (its arithmetic, on any machine): a (frame, view) goes on the
    device only if the reserve (>= 2 GiB, 5 % of the device, 1.5 x the largest working set
    seen) stays free afterwards; otherwise to the host tier."""
    G = features.GIB
    cache = features.FeatureCache(torch.device("cuda"), device_mb=None, host_mb=None)
    assert cache.cuda and cache.host_tier
    monkeypatch.setattr(cache, "device_free", lambda: 10 * G)
    total = {"v": 80 * G}
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: type("P", (), {"total_memory": total["v"]})
    )
    assert cache.reserve() == 4 * G  # 5 % of 80 GiB
    assert cache.device_room(6 * G) and not cache.device_room(6 * G + 1)
    cache.working_set = 4 * G
    assert cache.reserve() == 6 * G and not cache.device_room(5 * G)
    total["v"] = 16 * G
    cache.working_set = 0
    assert cache.reserve() == 2 * G  # the floor


def test_cli_reports_the_encoder_tiers(tmp_path, capsys):
    make_dataset(tmp_path, ONE_VIDEO)
    argv = [*cli_args(tmp_path, tmp_path / "o", "--backend", "aot"), "--model", "aott",
            "--random-weights", "0", "--device", "cpu", "--videos", "v1",
            "--encoder-cache-mb", "0", "--host-cache-mb", "64"]  # fmt: skip
    assert main(argv) == 0
    # CPU: no host tier, no device room -> every later use recomputed
    assert "encoder: 96 calls, 0 device hits, 0 host hits, 66 recomputes" in capsys.readouterr().out


def test_dag_passes_the_tier_caps_only_when_set(tmp_path):
    """params.yaml's caps reach the propagate command; unset (the default) they add
    nothing, so the generated dvc.yaml files do not change."""
    import shlex
    import shutil
    from pathlib import Path

    import yaml

    from rvos_kit.pipeline.dag import spelled

    repo = Path(__file__).resolve().parents[1]
    p = yaml.safe_load((repo / "params.yaml").read_text())
    shutil.copy(repo / "checkpoints.lock", tmp_path / "checkpoints.lock")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    plain = spelled(tmp_path / "params.yaml")  # the commands as the stages run them
    p["propagation"]["aot"].update(encoder_cache_mb=512, host_cache_mb=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    capped = spelled(tmp_path / "params.yaml")
    words = shlex.split(capped["propagate_aot_soc"]["cmd"])
    assert words[-4:] == ["--encoder-cache-mb", "512.0", "--host-cache-mb", "0.0"]
    assert shlex.split(plain["propagate_aot_soc"]["cmd"]) == words[:-4]
    assert not any("cache-mb" in s["cmd"] for s in plain.values())
    assert capped["propagate_deaot_vit_huge"] == plain["propagate_deaot_vit_huge"]
