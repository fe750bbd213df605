import importlib.resources

import pytest
from conftest import compose_run

from sam2tune.config.schema import RunConfig, config_hash
from sam2tune.config.store import CONF_DIR

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_default_is_the_quick_cpu_demo():
    cfg = compose_run([])
    assert isinstance(cfg, RunConfig)
    assert cfg.model.name == "sam2.1_tiny" and cfg.model.image_size == 256
    assert cfg.video.kind == "synthetic" and cfg.device == "auto"
    assert cfg.knobs.offload_video_to_cpu is False and cfg.knobs.max_cond_frames_in_attn == -1


def test_all_eight_models_exist_with_packaged_configs():
    assert {
        "sam2.1_tiny",
        "sam2.1_small",
        "sam2.1_base_plus",
        "sam2.1_large",
        "sam2_tiny",
        "sam2_small",
        "sam2_base_plus",
        "sam2_large",
    } <= set(MODELS)
    for name in MODELS:
        cfg = compose_run([f"model={name}"])
        assert cfg.model.name == name
        assert (importlib.resources.files("sam2") / cfg.model.config_file).is_file()
        assert cfg.model.checkpoint_url.endswith(cfg.model.checkpoint_name)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_preset_composes(name):
    cfg = compose_run([f"experiment={name}"])
    assert isinstance(cfg, RunConfig)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.image_size=100", "model.image_size"),
        ("video.num_frames=0", "video.num_frames"),
        ("video.num_objects=-1", "video.num_objects"),
        ("knobs.max_cond_frames_in_attn=1", "knobs.max_cond_frames_in_attn"),
        ("limits.host_memory_budget=lots", "limits.host_memory_budget"),
        ("limits.device_memory_budget=-5GB", "limits.device_memory_budget"),
        ("knobs.dtype=float8", "knobs.dtype"),
        ("scenario.prompt=scribble", "scenario.prompt"),
    ],
)
def test_bad_values_are_refused_naming_the_input(override, needle):
    with pytest.raises(Exception) as e:
        compose_run([override])
    assert needle in str(e.value.__cause__ or e.value)


def test_config_hash_ignores_where_results_go_but_not_knobs():
    a = compose_run(["results_dir=/tmp/a"])
    b = compose_run(["results_dir=/tmp/b", "limits.timeout_s=5"])
    c = compose_run(["knobs.offload_video_to_cpu=true"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert RunConfig.from_dict(c.to_dict()) == c


def test_readme_documents_every_column():
    from conftest import REPO

    from sam2tune.record import COLUMNS

    readme = (REPO / "README.md").read_text()
    missing = [c.name for c in COLUMNS if f"`{c.name}`" not in readme]
    assert not missing
