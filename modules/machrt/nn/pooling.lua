-- Pooling: nn.MaxPool2d(k, stride = k, padding = 0), nn.AdaptiveAvgPool2d(1),
-- nn.GeM{p = 3, eps = 1e-6}. The global pools give N x C x 1 x 1, as
-- PyTorch's modules do; nn.Flatten then makes N x C.
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local function pair(v)
    if type(v) == "table" then return v[1], v[2] end
    return v, v
end

local MaxPool2d = Module.class("MaxPool2d", Module)

function MaxPool2d:__init(k, stride, padding)
    self.kh, self.kw = pair(k)
    self.sh, self.sw = pair(stride or k)
    self.ph, self.pw = pair(padding or 0)
    if self.ph * 2 > self.kh or self.pw * 2 > self.kw then
        error("MaxPool2d: padding must be at most half the kernel size", 3)
    end
end

function MaxPool2d:describe()
    return ("kernel=%dx%d, stride=%dx%d, padding=%dx%d"):format(self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
end

function MaxPool2d:forward(x)
    self:check_input(x, 4, nil, nil, "N x C x H x W")
    local oh = (x:size(3) + 2 * self.ph - self.kh) // self.sh + 1
    local ow = (x:size(4) + 2 * self.pw - self.kw) // self.sw + 1
    if oh < 1 or ow < 1 then
        self:fail("input %s is too small for kernel %dx%d", Module.shape_str(x), self.kh, self.kw)
    end
    local shape = {x:size(1), x:size(2), oh, ow}
    self.output, self.indices = self:kernel(K.maxpool2d_forward, x, self.kh, self.kw, self.sh, self.sw,
        self.ph, self.pw, Module.reuse(self.output, shape, x),
        self.indices and Module.shape_str(self.indices) == table.concat(shape, "x") and self.indices or nil)
    return self.output
end

function MaxPool2d:backward(x, grad_output)
    return (self:kernel(K.maxpool2d_backward, grad_output, self.indices, x:size(3), x:size(4),
        x:new_empty()))
end

local AdaptiveAvgPool2d = Module.class("AdaptiveAvgPool2d", Module)

function AdaptiveAvgPool2d:__init(size)
    local h, w = pair(size or 1)
    if h ~= 1 or w ~= 1 then error("AdaptiveAvgPool2d: only output size 1 is supported", 3) end
end

function AdaptiveAvgPool2d:describe() return "1" end

function AdaptiveAvgPool2d:forward(x)
    self:check_input(x, 4, nil, nil, "N x C x H x W")
    local n, c = x:size(1), x:size(2)
    self.pooled = self:kernel(K.avgpool_global_forward, x, Module.reuse(self.pooled, {n, c}, x))
    self.output = self.pooled:reshape{n, c, 1, 1}
    return self.output
end

function AdaptiveAvgPool2d:backward(x, grad_output)
    return (self:kernel(K.avgpool_global_backward, grad_output:reshape{x:size(1), x:size(2)},
        x:size(3), x:size(4), x:new_empty()))
end

-- Generalized mean pooling; the exponent p is learned.
local GeM = Module.class("GeM", Module)

function GeM:__init(opts)
    opts = opts or {}
    self.eps = opts.eps or 1e-6
    self:register_parameter("p", mt.full({1}, opts.p or 3))
end

function GeM:describe()
    return ("p=%.4f, eps=%g"):format(self.params.p.param:item(), self.eps)
end

function GeM:forward(x)
    self:check_input(x, 4, nil, nil, "N x C x H x W")
    local n, c = x:size(1), x:size(2)
    self.pooled = self:kernel(K.gem_forward, x, self.params.p.param, self.eps, Module.reuse(self.pooled, {n, c}, x))
    self.output = self.pooled:reshape{n, c, 1, 1}
    return self.output
end

function GeM:backward(x, grad_output)
    local p = self.params.p
    return (self:kernel(K.gem_backward, x, p.param, self.eps, self.pooled,
        grad_output:reshape{x:size(1), x:size(2)}, x:new_empty(), p.grad))
end

return {MaxPool2d = MaxPool2d, AdaptiveAvgPool2d = AdaptiveAvgPool2d, GeM = GeM}
