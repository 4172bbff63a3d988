"""Diffusion core: schedule, DDIM steps, sampler shapes and determinism, translation solve."""

import torch

from engines.diffusion.denoiser import X_DIM, DenoiserConfig, PoseDenoiser
from engines.diffusion.features import COND_DIM, condition_features, liftable
from engines.diffusion.sampler import sample
from engines.diffusion.schedule import DDIMScheduler
from engines.lifting.translation import solve_translation


def test_schedule_runs_from_noise_to_clean():
    s = DDIMScheduler(1000)
    assert s.alpha_bar[0] > 0.999 and s.alpha_bar[-1] < 1e-6
    assert torch.all(s.alpha_bar[1:] < s.alpha_bar[:-1])
    assert s.timesteps(4) == [(999, 749), (749, 500), (500, 250), (250, -1)]
    assert s.timesteps(2, start=300) == [(300, 150), (150, -1)]


def test_ddim_step_with_the_true_x0_recovers_the_forward_process():
    s = DDIMScheduler()
    x0, noise = torch.randn(5, 7), torch.randn(5, 7)
    x_t = s.add_noise(x0, noise, torch.full((5,), 600))
    x_prev = s.step(x0, 600, 300, x_t)
    expected = s.add_noise(x0, noise, torch.full((5,), 300))  # same noise, lower level
    torch.testing.assert_close(x_prev, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(s.step(x0, 300, -1, x_prev), x0)


def test_sampler_shapes_and_determinism():
    torch.manual_seed(0)
    model = PoseDenoiser(DenoiserConfig(width=64, depth=2)).eval()
    cond = torch.randn(3, COND_DIM)
    a = sample(model, DDIMScheduler(), cond, num_steps=4, num_samples=5, generator=torch.Generator().manual_seed(1))
    b = sample(model, DDIMScheduler(), cond, num_steps=4, num_samples=5, generator=torch.Generator().manual_seed(1))
    c = sample(model, DDIMScheduler(), cond, num_steps=4, num_samples=5, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 5, X_DIM)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_condition_features_are_invariant_to_where_the_box_is_only_through_the_box_terms():
    kp = torch.rand(2, 33, 3)
    kp[..., 2] = 1.0
    shifted = kp.clone()
    shifted[..., :2] += 0.3
    fa, fb = condition_features(kp), condition_features(shifted)
    assert fa.shape == (2, COND_DIM)
    torch.testing.assert_close(fa[:, :99], fb[:, :99])  # relative layout unchanged
    torch.testing.assert_close(fb[:, 99:101] - fa[:, 99:101], torch.full((2, 2), 0.3))
    kp[1, 2:, 2] = 0.0
    assert liftable(kp).tolist() == [True, False]


def test_translation_is_recovered_from_exact_and_noisy_projections():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(3, 24, 3, generator=g) * 0.4
    t = torch.tensor([[0.3, -0.2, 4.0], [1.0, 0.5, 8.0], [-2.0, 0.0, 12.0]])
    seen = points + t[:, None]
    uv = seen[..., :2] / seen[..., 2:]
    torch.testing.assert_close(solve_translation(points, uv, torch.ones(3, 24)), t, atol=2e-3, rtol=1e-3)
    weights = torch.ones(3, 24)
    weights[:, 8:] = 0  # only a third of the points seen
    torch.testing.assert_close(solve_translation(points, uv, weights), t, atol=2e-3, rtol=1e-3)


def test_riders_are_denoised_in_the_last_call_and_leave_the_samples_as_they_were():
    """``sample(riders=...)`` runs other rows through the network's last call beside the
    samples: their clean predictions are the network's own, and the samples do not change."""
    from engines.diffusion.sampler import sample
    from engines.diffusion.schedule import DDIMScheduler
    from engines.diffusion.weights import load_denoiser

    model = load_denoiser()
    calls = []
    counted = lambda x, t, c: (calls.append(len(x)), model(x, t, c))[1]  # noqa: E731
    g = torch.Generator().manual_seed(3)
    cond = torch.randn(2, model.config.cond_dim, generator=g)
    x_t, t = torch.randn(3, model.config.x_dim, generator=g), torch.tensor([100, 100, 50])
    rider_cond = cond[[0, 1, 1]]
    sched = DDIMScheduler()
    plain = sample(model, sched, cond, num_steps=2, num_samples=4, generator=torch.Generator().manual_seed(1))
    with_riders, x0 = sample(counted, sched, cond, num_steps=2, num_samples=4, generator=torch.Generator().manual_seed(1),
                             x_dim=model.config.x_dim, riders=(x_t, t, rider_cond))
    assert calls == [8, 11]  # the riders join the last step's call
    torch.testing.assert_close(with_riders, plain, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(x0, model(x_t, t, rider_cond), atol=1e-5, rtol=0)
