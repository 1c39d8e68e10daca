"""A sweep whose baseline sits at the ceiling, or whose generator agrees with its classes near chance, ends with
one line saying its differences test the wiring; a sweep with room to gain and a generator that knows its
classes says nothing."""

from synthaug.training.caveats import caveat


def test_a_baseline_at_the_ceiling_or_samples_near_chance_is_one_line_and_room_to_gain_is_none():
    smoke = caveat(0.9952, {"ddpm-cond": 0.19}, 10)          # what issue 19 met: shapes, colour blobs
    assert smoke == ("note: the baseline is at the ceiling (99.5% mean test accuracy, at least 98%); ddpm-cond's "
                     "samples agree with their classes 19% of the time (chance 10%): differences here test the "
                     "wiring, not whether synthetic data helps")
    assert caveat(0.985, {}, 10).startswith("note: the baseline is at the ceiling (98.5%")
    assert caveat(0.70, {"ddpm-cond": 0.15}, 10).startswith("note: ddpm-cond's samples agree with their classes 15%")
    assert caveat(0.70, {"ddpm-cond": 0.90}, 10) is None     # CIFAR-LT with a generator that knows its classes
    assert caveat(0.979, {"ddpm-cond": 0.20}, 10) is None    # below the ceiling; 2x chance is not near it
    assert caveat(None, {}, 10) is None                      # no baseline finished, no conditional generator
