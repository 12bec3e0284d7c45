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
-- gives the input gradient; the parameter gradients stay local sums, as
-- the gradient reducer averages them with the others.
--
-- nn.SyncBatchNorm2d.convert(model) turns every BatchNorm2d of a model into
-- this one in place (environment.sync_batchnorm).
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"
local BatchNorm2d = require "machrt.nn.batchnorm"
local dist = require "machrt.dist"

local SyncBatchNorm2d = Module.class("SyncBatchNorm2d", BatchNorm2d)

-- Per-channel sums of an N x C x H x W tensor, as a C-vector.
local function channel_sums(t) return t:sum(1):sum(2):sum(2) end

local function as_channels(v, c) return v:reshape{ 1, c, 1, 1 } end

function SyncBatchNorm2d:forward(x)
    if not self.train then return BatchNorm2d.forward(self, x) end
    self:check_input(x, 4, 2, self.c, ("N x %d x H x W"):format(self.c))
    local c, p, b = self.c, self.params, self.buffers
    local sums = x:new_empty{ c + 1 }
    sums:narrow(1, 1, c):copy(channel_sums(x))
    sums:set(x:size(1) * x:size(3) * x:size(4), c + 1)
    dist.allreduce(sums, "sum")
    local count = sums:get(c + 1)
    if count < 2 then
        self:fail("training needs more than one value per channel over all %d ranks, got input %s on rank %d",
            dist.size(), Module.shape_str(x), dist.rank())
    end
    local mean = sums:narrow(1, 1, c) / count
    local centered = x - as_channels(mean, c)
    centered:mul_(centered)
    local var = channel_sums(centered)
    centered:release()
    dist.allreduce(var, "sum")
    var:div_(count)
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
    local sums = x:new_zeros{ 2 * c }
    local dbias, dweight = sums:narrow(1, 1, c), sums:narrow(1, c + 1, c)
    -- Evaluation-mode backward with the batch's mean and invstd: dx = dy *
    -- w * invstd, and the local sum(dy) and sum(dy * xhat) into the slots.
    local dx = self:kernel(K.batchnorm2d_backward, x, grad_output, p.weight.param, self.save_mean,
        self.save_invstd, false, x:new_empty(), dweight, dbias)
    p.weight.grad:add_(dweight)
    p.bias.grad:add_(dbias)
    dist.allreduce(sums, "sum")
    -- dx -= w * invstd * (mean(dy) + xhat * mean(dy * xhat)), means over all ranks.
    local scale = p.weight.param * self.save_invstd
    local shift = as_channels(scale * dbias / self.count, c)
    local slope = as_channels(scale * self.save_invstd * dweight / self.count, c)
    local centered = x - as_channels(self.save_mean, c)
    centered:mul_(slope)
    dx:sub_(centered):sub_(shift)
    centered:release()
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
