-- Data-parallel training of an experiment: `mpirun -np N machrt
-- experiments/<name>.lua` trains one model on N ranks. Experiments get it as
-- train.data_parallel:
--
--   local ranks = train.data_parallel(cfg)          -- environment.distributed, the checks
--   local model = ranks:wrap(pipeline.build_model(...))  -- sync BN, rank 0's weights, reducer
--   train.Stepper{ ..., reduce_gradients = ranks.reduce_gradients }
--   ranks:epoch_totals(stepper)                     -- the epoch's loss and samples over all ranks
--   ranks:finish(model)                             -- every rank holds the same weights, or an error
--
-- What the ranks share: the global batch is training.batch_size, each rank
-- takes its contiguous block of every batch (train.loaders); gradients are
-- averaged over the flat gradient buffer in fixed buckets started during
-- backward (dist.GradReducer, the same reduction order in every run);
-- environment.sync_batchnorm reduces the batch statistics over the ranks
-- (N ranks then compute what one process computes on the global batch);
-- without it each rank normalises with its own block's statistics and rank
-- 0's running statistics are used for validation and saved. Only rank 0
-- writes the run folder and prints; the others are quiet. In a plain run
-- (one rank) every call here is a no-op.
local dist = require "machrt.dist"
local log = require "machrt.log"

local M = {}

local DataParallel = {}
DataParallel.__index = DataParallel

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- Applies environment.distributed and checks that the run can split:
--- training.batch_size must divide by the rank count (an error naming
--- both numbers), and dataset.on_error = skip is refused with several
--- ranks (a rank whose whole block is skipped would leave the others
--- waiting in a collective).
function M.setup(cfg)
    local env, tr = cfg.environment, cfg.training
    local size = dist.setup(env.distributed)
    if type(env.sync_batchnorm) ~= "boolean" then
        fail("environment.sync_batchnorm must be true or false, got %s", tostring(env.sync_batchnorm))
    end
    local self = setmetatable({ rank = dist.rank(), size = size, main = dist.is_main(),
                                sync_batchnorm = env.sync_batchnorm }, DataParallel)
    self.reduce_gradients = function() if self.reducer then self.reducer:wait() end end
    if size == 1 then return self end
    dist.local_batch_size(tr.batch_size, size, "training.batch_size")
    if cfg.dataset.on_error ~= "fail" then
        fail("dataset.on_error = %s is not supported on %d ranks: a rank whose clips are all skipped "
             .. "would leave the others waiting; use fail", tostring(cfg.dataset.on_error), size)
    end
    if not self.main then log.stream = io.open("/dev/null", "w") end
    log.info("data-parallel: %d ranks, %d clips per rank of each batch of %d, sync_batchnorm %s",
             size, tr.batch_size // size, tr.batch_size, tostring(env.sync_batchnorm))
    -- Gradient accumulation reports a parameter ready once per batch: the
    -- buckets then start after the last batch of the accumulation, in wait().
    self.overlap = tr.grad_accumulation == 1
    return self
end

--- Prepares a freshly built model for data-parallel training: batch norm
--- made synchronous (environment.sync_batchnorm), rank 0's weights on every
--- rank, and the gradient reducer attached to the modules' backward.
--- Returns the model.
function DataParallel:wrap(model)
    if self.size == 1 then return model end
    if self.sync_batchnorm then require("machrt.nn").SyncBatchNorm2d.convert(model) end
    if not model.flat_grads then model:flatten_parameters() end
    dist.broadcast_module(model)
    self.reducer = dist.GradReducer(model)
    if self.overlap then self.reducer:attach(model) end
    return model
end

--- Makes the stepper's epoch loss and sample count the sums over all ranks
--- (each rank's loss is weighted by its samples, so the mean is the mean
--- over the global batches).
function DataParallel:epoch_totals(stepper)
    if self.size == 1 then return stepper end
    local t = dist.all_gather({ stepper.loss_sum, stepper.seen })
    local loss, seen = 0, 0
    for _, v in ipairs(t) do loss, seen = loss + v[1], seen + v[2] end -- in rank order on every rank
    stepper.loss_sum, stepper.seen = loss, seen
    return stepper
end

--- The end of training: every rank must hold the same parameters (a
--- mismatch is a bug, said out loud); the reducer's hooks are removed, so
--- what follows (interpretations on rank 0) runs backward without
--- collectives.
function DataParallel:finish(model)
    if self.size == 1 then return model end
    local p = model.flat_params
    local spread = (dist.allreduce(p:clone(), "max") - dist.allreduce(p:clone(), "min")):abs():max()
    if spread ~= 0 then
        fail("data-parallel: the %d ranks' weights differ by up to %g after training", self.size, spread)
    end
    log.info("data-parallel: the %d ranks hold identical weights", self.size)
    if self.reducer then
        self.reducer:detach(model)
        self.reducer:release()
        self.reducer = nil
    end
    return model
end

return M
