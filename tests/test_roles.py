"""The several-network schedule (methods/roles.py): each step's phase and each role's update count, as closed
forms, equal a step-by-step count for a Python int and for a traced step."""
import jax
import jax.numpy as jnp
import pytest

from fewstep_jax.methods.roles import Schedule

SCHEDULES = {
    'dmd2': Schedule.every(5, always=('critic',), then=('student',), then_first=True),
    'sid': Schedule.every(1, always=('critic',), then=('student',)),
    'ctm_gan_from_3': Schedule([('student',), ('student_gan',), ('discriminator',)], pattern=(2, 1), start=3),
}


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_phases_and_update_counts_match_a_step_by_step_count(name):
  schedule = SCHEDULES[name]
  phase = jax.jit(schedule.phase)
  for update in {u for phase_names in schedule.phases for u in phase_names}:
    runs = lambda names, update=update: update in names
    count_before = jax.jit(lambda step, runs=runs: schedule.count_before(runs, step))
    count = 0
    for step in range(23):
      index = schedule.phase(step)
      assert int(phase(jnp.int32(step))) == index
      assert schedule.count_before(runs, step) == count == int(count_before(jnp.int32(step))), (update, step)
      count += runs(schedule.phases[index])


def test_the_two_time_scale_rule_and_the_ctm_alternation():
  dmd2, ctm = SCHEDULES['dmd2'], SCHEDULES['ctm_gan_from_3']
  assert [dmd2.phases[dmd2.phase(step)] for step in range(6)] == (
      [('student', 'critic')] + [('critic',)] * 4 + [('student', 'critic')])
  # CTM: the student alone before gan_start, then the head on odd steps and the student with its GAN term on even.
  assert [ctm.phases[ctm.phase(step)][0] for step in range(7)] == [
      'student', 'student', 'student', 'discriminator', 'student_gan', 'discriminator', 'student_gan']
