"""Task 5: the SGD update with momentum: the article's W_{t+1} = W_t − η ∇L(W_t).

docs/math.md §7 ("Stochastic gradient descent", "Momentum and Nesterov"); the engine's
optimizer is ``minitl.optim.SGD`` (its step is ``minitl.optim.SGD.update``).

    plain:     W ← W − η g                           g = ∇L(W) = p.grad, this step's gradient
    momentum:  v ← μ v + g   (v = g at the first step),   W ← W − η v

The velocity v is a decaying sum of the past gradients, v_t = Σ_k μ^k g_(t−k): along a
direction where the gradients agree, steps grow up to 1 / (1 − μ) times; where they
alternate, they cancel.

What you write
    MomentumSGD.step()   one update of every parameter p (a minitl Tensor: p.data, p.grad)
                         that requires grad and has a gradient

Hints
    - Keep one velocity per parameter, in self.velocity keyed by id(p).
    - Update p.data in place (p.data -= ...): the model holds these very arrays.
    - A frozen parameter (p.requires_grad False) or one without a gradient (p.grad None)
      is left alone, and so is its velocity.

Run the checks: python -m pytest exercises -k task05
"""


class MomentumSGD:
    """SGD with momentum μ (0 for plain SGD) and learning rate η on a list of parameters."""

    def __init__(self, params, lr, momentum=0.0):
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.velocity = {}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        """W ← W − η v with v ← μ v + g, for every parameter that requires grad and has a gradient."""
        raise NotImplementedError("task 5: write MomentumSGD.step")
