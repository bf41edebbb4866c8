import numpy as np
import pytest

from opmap.twin import LithiumConfig
from opmap.twin.cell import GrainPopulation


def plating_um(time_s: float) -> float:
    """Li thickness of a steady 4.5 µm/h plating (the paper's early charge)."""
    return 4.5 * time_s / 3600.0


def population(visible=None) -> GrainPopulation:
    pop = GrainPopulation(
        LithiumConfig(), cell_length_um=1617.0, li_bottom_um=24.0, seed=4, visible=visible
    )
    pop.advance_to(2400.0, plating_um)
    return pop


def test_hidden_azimuths_raise_the_rate_so_visible_counts_are_kept():
    def unshadowed(chi_deg: float) -> bool:
        return not 200.0 <= chi_deg < 360.0

    everything, shadowed = population().table(), population(unshadowed).table()
    np.testing.assert_array_equal(
        shadowed.visible, (shadowed.azimuth_deg < 200.0) | (shadowed.azimuth_deg >= 360.0)
    )
    assert everything.visible.all()
    # of the 6 Burgers clusters, 60, 120, 180 and half of 0 (359° is shadowed) are visible:
    # a share of 3.5 / 6, so 6 / 3.5 times as many grains are drawn
    assert len(shadowed) / len(everything) == pytest.approx(6 / 3.5, rel=0.1)
    assert shadowed.visible.sum() == pytest.approx(len(everything), rel=0.15)


def test_no_grains_before_li_is_plated_and_a_nearly_hidden_ring_is_refused():
    pop = GrainPopulation(LithiumConfig(), cell_length_um=1617.0, li_bottom_um=24.0, seed=1)
    pop.advance_to(3600.0, lambda t: 0.0)
    assert len(pop.table()) == 0
    with pytest.raises(ValueError, match="visible"):
        GrainPopulation(
            LithiumConfig(),
            cell_length_um=1617.0,
            li_bottom_um=24.0,
            seed=1,
            visible=lambda chi: 100.0 < chi < 101.0,
        )
