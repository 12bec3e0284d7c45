-- nn.SyncBatchNorm2d(c, {eps, momentum}): BatchNorm2d whose training
-- statistics are those of the whole batch over every rank (PyTorch's
-- SyncBatchNorm), so that N ranks each holding 1/N of a batch compute what
-- one process computes on all of it. Same parameters, buffers and
-- state-dict names as BatchNorm2d; evaluation uses the running statistics,
-- with no communication.
--
-- Forward: allreduce of the per-channel sums and the count gives the mean;
-- a second allreduce of the sums of squared deviations from that mean
-- gives the variance (two passes: no cancellation when the mean is large
-- against the spread). Backward: allreduce of sum(dy) and sum(dy * xhat)
-- gives the input gradient and the parameter gradients (each rank adds
-- the global sums over the rank count, which the gradient reducer's mean
-- turns into the global sums). Every sum is taken and reduced in double.
--
-- nn.SyncBatchNorm2d.convert(model) turns every BatchNorm2d of a model into
-- this one in place (environment.sync_batchnorm).
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"
local BatchNorm2d = require "machrt.nn.batchnorm"
local dist = require "machrt.dist"

local SyncBatchNorm2d = Module.class("SyncBatchNorm2d", BatchNorm2d)

-- Per-channel sums of an N x C x H x W tensor, accumulated in double, as a
-- list of C numbers. Double matters: each rank's part of a sum can be large
-- while the parts nearly cancel (sum(dy) over a batch is close to 0 before
-- a batch norm), and float parts would leave the total with the rounding
-- of the parts instead of its own.
local function channel_sums(t, c, extra)
    local s = {}
    for k = 1, c do s[k] = t:select(2, k):sum() end
    if extra then s[c + 1] = extra end
    return s
end

local function as_channels(v, c) return v:reshape{ 1, c, 1, 1 } end

-- A list of numbers as a C-vector like x.
local function vector(x, list, first, c) return x:new_empty{ c }:copy(mt.tensor(table.move(list, first, first + c - 1, 1, {}))) end

function SyncBatchNorm2d:forward(x)
    if not self.train then return BatchNorm2d.forward(self, x) end
    self:check_input(x, 4, 2, self.c, ("N x %d x H x W"):format(self.c))
    local c, p, b = self.c, self.params, self.buffers
    local sums = dist.allreduce_numbers(channel_sums(x, c, x:size(1) * x:size(3) * x:size(4)), "sum")
    local count = sums[c + 1]
    if count < 2 then
        self:fail("training needs more than one value per channel over all %d ranks, got input %s on rank %d",
            dist.size(), Module.shape_str(x), dist.rank())
    end
    for k = 1, c do sums[k] = sums[k] / count end
    local mean = vector(x, sums, 1, c)
    local centered = x - as_channels(mean, c)
    centered:mul_(centered)
    local squares = dist.allreduce_numbers(channel_sums(centered, c), "sum")
    centered:release()
    for k = 1, c do squares[k] = squares[k] / count end
    local var = vector(x, squares, 1, c)
    self.output, self.save_mean, self.save_invstd = self:kernel(K.batchnorm2d_forward, x,
        p.weight.param, p.bias.param, mean, var, false, self.momentum, self.eps,
        Module.reuse(self.output, x:shape(), x), self.save_mean, self.save_invstd)
    local m = self.momentum
    b.running_mean:mul_(1 - m):add_(mean * m)
    b.running_var:mul_(1 - m):add_(var * (m * count / (count - 1)))
    b.num_batches_tracked:set(b.num_batches_tracked:item() + 1)
    self.stats_from_batch, self.count = true, count
    return self.output
end

function SyncBatchNorm2d:backward(x, grad_output)
    if not self.stats_from_batch then return BatchNorm2d.backward(self, x, grad_output) end
    local c, p = self.c, self.params
    -- Evaluation-mode backward with the batch's mean and invstd: dx = dy *
    -- w * invstd (its parameter sums are replaced by the global ones below).
    local dx = self:kernel(K.batchnorm2d_backward, x, grad_output, p.weight.param, self.save_mean,
        self.save_invstd, false, x:new_empty(), x:new_zeros{ c }, x:new_zeros{ c })
    local xhat = (x - as_channels(self.save_mean, c)):mul_(as_channels(self.save_invstd, c))
    local weighted = xhat * grad_output
    local local_sums = channel_sums(grad_output, c)
    table.move(channel_sums(weighted, c), 1, c, c + 1, local_sums)
    weighted:release()
    local sums = dist.allreduce_numbers(local_sums, "sum")
    local dbias, dweight = vector(x, sums, 1, c), vector(x, sums, c + 1, c)
    -- The parameter gradients: the global sums over the rank count, the
    -- same on every rank, so the reducer's mean gives the global sum with
    -- a float's rounding of it (not of the rank parts).
    p.weight.grad:add_(dweight / dist.size())
    p.bias.grad:add_(dbias / dist.size())
    -- dx -= w * invstd * (mean(dy) + xhat * mean(dy * xhat)), means over all ranks.
    local scale = p.weight.param * self.save_invstd
    local shift = as_channels(scale * dbias / self.count, c)
    local slope = as_channels(scale * dweight / self.count, c)
    xhat:mul_(slope)
    dx:sub_(xhat):sub_(shift)
    xhat:release()
    return dx
end

--- Replaces every BatchNorm2d module of `model` by a SyncBatchNorm2d with
--- the same parameters and buffers (in place); returns the model and the
--- number of modules converted.
function SyncBatchNorm2d.convert(model)
    local n = 0
    model:apply(function(m)
        if getmetatable(m) == BatchNorm2d then
            setmetatable(m, SyncBatchNorm2d)
            n = n + 1
        end
    end)
    return model, n
end

return SyncBatchNorm2d
