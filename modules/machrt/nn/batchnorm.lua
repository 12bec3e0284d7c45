-- nn.BatchNorm2d(c, {eps = 1e-5, momentum = 0.1}): PyTorch's semantics
-- (batch statistics in training, running statistics in evaluation; the
-- running variance is updated with the unbiased batch variance).
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local BatchNorm2d = Module.class("BatchNorm2d", Module)

function BatchNorm2d:__init(c, opts)
    if math.type(c) ~= "integer" or c < 1 then error("BatchNorm2d: channels must be a positive integer", 3) end
    opts = opts or {}
    self.c = c
    self.eps = opts.eps or 1e-5
    self.momentum = opts.momentum or 0.1
    self:register_parameter("weight", mt.ones{c})
    self:register_parameter("bias", mt.zeros{c})
    self:register_buffer("running_mean", mt.zeros{c})
    self:register_buffer("running_var", mt.ones{c})
    self:register_buffer("num_batches_tracked", mt.zeros({}, "int64"))
end

function BatchNorm2d:describe() return tostring(self.c) end

-- The kernels on an N x C x H x W tensor (nn.BatchNorm1d hands its N x C
-- input over as N x C x 1 x 1); what a channel is called in errors is
-- self.unit.
function BatchNorm2d:normalize(x4)
    if self.train and x4:size(1) * x4:size(3) * x4:size(4) < 2 then
        self:fail("training needs more than one value per %s, got input %s", self.unit, Module.shape_str(x4))
    end
    local p, b = self.params, self.buffers
    self.output4, self.save_mean, self.save_invstd = self:kernel(K.batchnorm2d_forward, x4,
        p.weight.param, p.bias.param, b.running_mean, b.running_var, self.train, self.momentum,
        self.eps, Module.reuse(self.output4, x4:shape(), x4), self.save_mean, self.save_invstd)
    if self.train then
        b.num_batches_tracked:set(b.num_batches_tracked:item() + 1)
    end
    self.stats_from_batch = self.train
    return self.output4
end

function BatchNorm2d:normalize_backward(x4, grad4)
    local p = self.params
    return (self:kernel(K.batchnorm2d_backward, x4, grad4, p.weight.param,
        self.save_mean, self.save_invstd, self.stats_from_batch, x4:new_empty(),
        p.weight.grad, p.bias.grad))
end

BatchNorm2d.unit = "channel"

function BatchNorm2d:forward(x)
    self:check_input(x, 4, 2, self.c, ("N x %d x H x W"):format(self.c))
    self.output = self:normalize(x)
    return self.output
end

function BatchNorm2d:backward(x, grad_output) return self:normalize_backward(x, grad_output) end

return BatchNorm2d
