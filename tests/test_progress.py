"""The progress bar's stored notebook output ends on the final state (not the 0 % it was first displayed at)."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from coursetools.editions import execute
from transferlab.progress import tqdm

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_outside_jupyter_it_is_tqdm_auto(capsys):
    assert sum(tqdm(range(4), desc="steps")) == 6
    assert "steps: 100%" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    nb = new_notebook(
        cells=[
            new_code_cell(
                "from transferlab.progress import tqdm\nbar = tqdm(range(5), desc='epochs')\n"
                "for _ in bar:\n    bar.set_postfix(loss='0.1')"
            ),
            new_code_cell("for _ in tqdm(range(3), desc='gone', leave=False):\n    pass"),
            new_code_cell("for _ in tqdm(range(3), disable=True):\n    pass"),
            new_code_cell(
                "import torch\nfrom transferlab.training import fit\n"
                "from torch.utils.data import DataLoader, TensorDataset\n"
                "data = DataLoader(TensorDataset(torch.randn(8, 2), torch.tensor([0, 1] * 4)), batch_size=4)\n"
                "model = torch.nn.Linear(2, 2)\n"
                "_ = fit(model, data, None, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2)"
            ),
        ]
    )
    return execute(nb, tmp_path_factory.mktemp("nb"))


def test_stored_text_shows_the_final_state_next_to_the_widget(ran):
    (output,) = ran.cells[0].outputs
    assert WIDGET in output.data
    assert output.data["text/plain"].startswith("epochs: 100%|██████████| 5/5 [")
    assert output.data["text/plain"].endswith("loss=0.1]")


def test_a_bar_that_does_not_stay_stores_no_stale_text(ran):
    assert [o.data for o in ran.cells[1].outputs] == [{"text/plain": ""}]
    assert ran.cells[2].outputs == []


def test_fit_stores_its_final_state(ran):
    (output,) = [o for o in ran.cells[3].outputs if o.output_type == "display_data"]
    assert WIDGET in output.data and output.data["text/plain"].startswith("epochs: 100%|██████████| 2/2 [")
    assert not [o for o in ran.cells[3].outputs if o.output_type in ("error", "stream")], ran.cells[3].outputs
    nbformat.validate(ran)
