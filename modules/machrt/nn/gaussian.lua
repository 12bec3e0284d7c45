-- A Gaussian model of embeddings and the Mahalanobis distance to it (the
-- anomaly score of a clip: how far its embedding lies from its machine's
-- normal ones). Computed by the core (runtime/nn/gaussian.c) on the CPU.
--
--   local g = nn.gaussian_fit(x, {shrinkage = "ledoit-wolf"})  -- x: N x D, N >= 2
--   -- g.mean (D), g.covariance, g.precision (D x D), g.shrinkage (the value used)
--   local m = nn.Mahalanobis(g.mean, g.precision)
--   local d = m:forward(x)          -- N distances
--   local dx = m:backward(x, dd)    -- N x D
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local M = {}

--- Mean, shrunk covariance and precision of the rows of x. opts.shrinkage:
--- "ledoit-wolf" (the default, scikit-learn's LedoitWolf) or a number in [0, 1].
function M.gaussian_fit(x, opts)
    if not mt.is_tensor(x) then error("gaussian_fit: x must be an N x D tensor, got " .. type(x), 2) end
    local s = opts and opts.shrinkage or "ledoit-wolf"
    if s == "ledoit-wolf" then
        s = -1
    elseif type(s) ~= "number" or s < 0 or s > 1 then
        error(("gaussian_fit: shrinkage must be 'ledoit-wolf' or a number in [0, 1], got %s"):format(tostring(s)), 2)
    end
    local ok, mean, cov, precision, used = pcall(K.gaussian_fit, x:to("cpu"), s)
    if not ok then error(tostring(mean), 2) end
    return { mean = mean, covariance = cov, precision = precision, shrinkage = used }
end

local Mahalanobis = Module.class("Mahalanobis", Module)

function Mahalanobis:__init(mean, precision)
    if not (mt.is_tensor(mean) and mt.is_tensor(precision)) then
        error("Mahalanobis: mean (D) and precision (D x D) must be tensors", 3)
    end
    self.d = mean:size(1)
    self:register_buffer("mean", mean)
    self:register_buffer("precision", precision)
end

function Mahalanobis:describe() return tostring(self.d) end

function Mahalanobis:forward(x)
    self:check_input(x, 2, 2, self.d, ("N x %d"):format(self.d))
    local b = self.buffers
    self.output = self:kernel(K.mahalanobis_forward, x, b.mean, b.precision)
    return self.output
end

function Mahalanobis:backward(x, grad_output)
    local b = self.buffers
    return (self:kernel(K.mahalanobis_backward, x, b.mean, b.precision, self.output, grad_output))
end

M.Mahalanobis = Mahalanobis
return M
