-- nn.Dropout(p = 0.5): inverted dropout in training, identity in evaluation.
-- Masks come from machrt's seeded generator (mt.manual_seed).
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local Dropout = Module.class("Dropout", Module)

function Dropout:__init(p)
    p = p or 0.5
    if type(p) ~= "number" or p < 0 or p > 1 then error("Dropout: p must be in [0, 1]", 3) end
    self.p = p
end

function Dropout:describe() return ("p=%g"):format(self.p) end

function Dropout:active() return self.train and self.p > 0 end

function Dropout:forward(x)
    if not self:active() then
        self.output = x
        return x
    end
    self.output, self.mask = self:kernel(K.dropout_forward, x, self.p,
        Module.reuse(self.output, x:shape(), x), Module.reuse(self.mask, x:shape(), x))
    return self.output
end

function Dropout:backward(x, grad_output)
    if not self:active() then return grad_output end
    return (self:kernel(K.dropout_backward, grad_output, self.mask, x:new_empty()))
end

return Dropout
