-- nn.BatchNorm1d(c, {eps = 1e-5, momentum = 0.1}) on N x C inputs, with
-- PyTorch's semantics (as nn.BatchNorm2d). An N x C input is an N x C x 1 x 1
-- image, so the 2-D kernels of nn.BatchNorm2d compute it on every device.
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"
local BatchNorm2d = require "machrt.nn.batchnorm"

local BatchNorm1d = Module.class("BatchNorm1d", BatchNorm2d)

function BatchNorm1d:__init(c, opts)
    if math.type(c) ~= "integer" or c < 1 then error("BatchNorm1d: features must be a positive integer", 3) end
    BatchNorm2d.__init(self, c, opts)
end

local function as_image(x) return x:reshape{ x:size(1), x:size(2), 1, 1 } end

function BatchNorm1d:forward(x)
    self:check_input(x, 2, 2, self.c, ("N x %d"):format(self.c))
    if self.train and x:size(1) < 2 then
        self:fail("training needs more than one value per feature, got input %s", Module.shape_str(x))
    end
    local p, b = self.params, self.buffers
    local x4 = as_image(x)
    self.output4, self.save_mean, self.save_invstd = self:kernel(K.batchnorm2d_forward, x4,
        p.weight.param, p.bias.param, b.running_mean, b.running_var, self.train, self.momentum,
        self.eps, Module.reuse(self.output4, x4:shape(), x), self.save_mean, self.save_invstd)
    if self.train then
        b.num_batches_tracked:set(b.num_batches_tracked:item() + 1)
    end
    self.stats_from_batch = self.train
    self.output = self.output4:reshape(x:shape())
    return self.output
end

function BatchNorm1d:backward(x, grad_output)
    local p = self.params
    local dx = self:kernel(K.batchnorm2d_backward, as_image(x), as_image(grad_output:contiguous()),
        p.weight.param, self.save_mean, self.save_invstd, self.stats_from_batch,
        x:new_empty{ x:size(1), x:size(2), 1, 1 }, p.weight.grad, p.bias.grad)
    return dx:reshape(x:shape())
end

return BatchNorm1d
