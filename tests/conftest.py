import os

# Nothing in the tests may reach a hub: fail loudly instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# At most 2 intra-op threads (the project's machines have 2 cores), shared out among pytest-xdist
# workers so that parallel workers do not oversubscribe the cores.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads() // _workers)))


@pytest.fixture(scope="session")
def tiny_pixel_repo(tmp_path_factory):
    from conjure_metrics.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_pixel"), latent=False)


@pytest.fixture(scope="session")
def tiny_latent_repo(tmp_path_factory):
    from conjure_metrics.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_latent"), latent=True)
