"""Task 5's solution: ``minitl.optim.SGD.update`` without weight decay and Nesterov."""


class MomentumSGD:
    def __init__(self, params, lr, momentum=0.0):
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.velocity = {}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p in self.params:
            if not p.requires_grad or p.grad is None:
                continue
            v = self.velocity.get(id(p))
            v = p.grad.copy() if v is None else self.momentum * v + p.grad
            self.velocity[id(p)] = v
            p.data -= self.lr * v
