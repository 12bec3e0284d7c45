-- nn.BatchNorm1d(c, {eps = 1e-5, momentum = 0.1}) on N x C inputs, with
-- PyTorch's semantics (as nn.BatchNorm2d). An N x C input is an N x C x 1 x 1
-- image, so the 2-D kernels of nn.BatchNorm2d compute it on every device.
local Module = require "machrt.nn.module"
local BatchNorm2d = require "machrt.nn.batchnorm"

local BatchNorm1d = Module.class("BatchNorm1d", BatchNorm2d)

function BatchNorm1d:__init(c, opts)
    if math.type(c) ~= "integer" or c < 1 then error("BatchNorm1d: features must be a positive integer", 3) end
    BatchNorm2d.__init(self, c, opts)
end

BatchNorm1d.unit = "feature"

local function as_image(x) return x:reshape{ x:size(1), x:size(2), 1, 1 } end

function BatchNorm1d:forward(x)
    self:check_input(x, 2, 2, self.c, ("N x %d"):format(self.c))
    self.output = self:normalize(as_image(x)):reshape(x:shape())
    return self.output
end

function BatchNorm1d:backward(x, grad_output)
    return self:normalize_backward(as_image(x), as_image(grad_output:contiguous())):reshape(x:shape())
end

return BatchNorm1d
