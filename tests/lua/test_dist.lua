-- machrt.dist in a single process (rank 0 of 1): every call works as a
-- no-op that checks its arguments; batch shards, the loader's shards of an
-- epoch for any rank count, bucket cutting and the reducer's bookkeeping;
-- SyncBatchNorm2d against BatchNorm2d and against finite differences; the
-- data-parallel wiring of an experiment in a plain run. The collectives
-- across ranks and data-parallel experiment runs: test_dist_mpi.lua.
local A = require "assert"
local mt = require "machrt"
local nn = require "machrt.nn"
local dist = require "machrt.dist"
local data = require "machrt.data"

local tests = {}
local function test(name, fn) tests[#tests + 1] = { name, fn } end

test("a plain run is rank 0 of 1 and every collective leaves its input as it is", function()
    A.eq(dist.rank(), 0)
    A.eq(dist.size(), 1)
    A.truthy(dist.is_main())
    for _, op in ipairs{ "sum", "mean", "max", "min" } do
        A.eq(dist.allreduce(mt.tensor{ 1, 2.5, -3 }, op):totable(), { 1, 2.5, -3 }, op)
    end
    A.eq(dist.broadcast(mt.tensor{ 4, 5 }, 0):totable(), { 4, 5 })
    dist.barrier()
    A.eq(dist.gather({ a = 1 }), { { a = 1 } })
    A.eq(dist.gather_rows(mt.tensor{ { 1, 2 } }):totable(), { { 1, 2 } })
    A.eq(dist.broadcast_string("x"), "x")
end)

test("bad arguments name the problem", function()
    A.raises(function() dist.allreduce(mt.ones{ 2 }, "product") end, "unknown reduction 'product'")
    A.raises(function() dist.broadcast(mt.ones{ 2 }, 1) end, "root 1 is not a rank (ranks are 0..0)")
    A.raises(function() dist.allreduce(mt.ones({ 2 }, "int64"), "sum") end, "expected a float32 tensor")
    A.raises(function() dist.allreduce({ 1, 2 }) end, "allreduce: expected a tensor, got table")
    A.raises(function() dist.gather_rows(mt.ones{ 3 }) end, "gather_rows: expected a 2-d tensor")
end)

test("setup: auto and none run locally; mpi without a launcher is an error naming it", function()
    A.eq(dist.setup("auto"), 1)
    A.eq(dist.setup("none"), 1)
    if require("machrt.dist_c").launcher() then A.skip("started under an MPI launcher") end
    A.raises(function() dist.setup("mpi") end, "environment.distributed", "not started by an MPI launcher",
        "mpirun")
    A.raises(function() dist.setup("sometimes") end, "'sometimes' is not auto, none or mpi")
end)

test("shard: contiguous blocks in rank order that put the batch back together", function()
    local batch = { 11, 12, 13, 14, 15, 16 }
    local all = {}
    for r = 0, 2 do
        local part, weight = dist.shard(batch, { rank = r, size = 3 })
        A.eq(#part, 2)
        A.eq(weight, 1)
        table.move(part, 1, #part, #all + 1, all)
    end
    A.eq(all, batch)
    A.eq((dist.shard(batch)), batch, "one rank takes everything")
    A.raises(function() dist.shard(batch, { rank = 0, size = 4 }) end,
        "a batch of 6 items does not divide by the 4 ranks")
    -- Uneven on request: the first ranks take one more, weights make the
    -- mean over ranks the mean over the batch.
    local sizes, weighted = {}, 0
    for r = 0, 3 do
        local part, weight = dist.shard(batch, { rank = r, size = 4, even = false })
        sizes[#sizes + 1] = #part
        weighted = weighted + weight * #part / 4 / #part
    end
    A.eq(sizes, { 2, 2, 1, 1 })
    A.near(weighted, 1, 1e-12)
    A.raises(function() dist.shard(batch, { rank = 4, size = 4 }) end, "rank 4 is not in 0..3")
end)

test("local_batch_size: an error naming the batch size and the rank count", function()
    A.eq(dist.local_batch_size(32, 4), 8)
    A.raises(function() dist.local_batch_size(30, 4, "training.batch_size") end,
        "training.batch_size 30 does not divide by the 4 ranks")
end)

test("buckets are cut from the end, cover every parameter once, in increasing order", function()
    local cut = dist.GradReducer.cut_buckets
    local b = cut({ 5, 3, 10, 2, 4 }, 6)
    -- backward order: 4 (4), 2+... -> {5,4} = 6 floats; {3} = 10; {2,1} = 8.
    A.eq(#b, 3)
    A.eq({ b[1].first, b[2].first, b[3].first }, { 1, 9, 19 })
    A.eq(b[1].params, { 2, 1 })
    A.eq(b[2].params, { 3 })
    A.eq(b[3].params, { 5, 4 })
    A.eq(#cut({ 5, 3 }, 1000), 1, "one bucket when everything fits")
end)

local function small_net()
    mt.manual_seed(3)
    return nn.Sequential{ nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2) }
end

test("GradReducer: needs flat gradients; ready twice is an error; wait resets", function()
    A.raises(function() dist.GradReducer(small_net()) end, "call model:flatten_parameters() first")
    local net = small_net():flatten_parameters()
    A.raises(function() dist.GradReducer(net, { bucket_mb = 0 }) end, "bucket_mb must be a positive number")
    local r = dist.GradReducer(net, { bucket_mb = 8 * 4 / 2 ^ 20 })
    A.truthy(#r.buckets > 1, "several buckets")
    net.flat_grads:copy(mt.arange(net.flat_grads:numel()))
    local before = net.flat_grads:clone()
    local params = net:parameters()
    r:ready(#params)
    A.raises(function() r:ready(#params) end, "reported ready twice in one step")
    A.raises(function() r:ready(#params + 1) end, "is not one of the model's 4")
    for i = #params - 1, 1, -1 do r:ready(i) end
    A.eq(r:started(), #r.buckets)
    r:wait()
    A.eq(r:started(), 0)
    A.eq((net.flat_grads - before):abs():max(), 0, "the mean over one rank is the gradient itself")
    r:release()
end)

test("GradReducer:attach: each module's backward reports its parameters", function()
    local net = small_net():flatten_parameters()
    local r = dist.GradReducer(net, { bucket_mb = 8 * 4 / 2 ^ 20 }):attach(net)
    local x = mt.randn{ 3, 4 }
    for step = 1, 2 do
        net:zero_grad()
        local y = net:forward(x)
        A.eq(r:started(), 0, "nothing started before backward, step " .. step)
        net:backward(x, mt.ones(y:shape()))
        A.eq(r:started(), #r.buckets, "every bucket started by the end of backward, step " .. step)
        r:wait()
    end
end)

-- Sync batch norm in one process is batch norm: the same numbers within
-- float rounding (the sums are taken in another order).
local function bn_pair(c)
    local a, b = nn.BatchNorm2d(c), nn.SyncBatchNorm2d(c)
    local w, bias = mt.randn{ c }, mt.randn{ c }
    for _, m in ipairs{ a, b } do
        m.params.weight.param:copy(w)
        m.params.bias.param:copy(bias)
    end
    return a, b
end

test("SyncBatchNorm2d alone equals BatchNorm2d: output, gradients, running statistics", function()
    mt.manual_seed(2)
    local x = mt.randn{ 3, 4, 5, 5 } * 2 + 50
    local g = mt.randn{ 3, 4, 5, 5 }
    local a, b = bn_pair(4)
    local ya, yb = a:forward(x), b:forward(x)
    A.truthy((ya - yb):abs():max() <= 1e-5 * ya:abs():max(), "output")
    local da, db = a:backward(x, g), b:backward(x, g)
    A.truthy((da - db):abs():max() <= 1e-5 * da:abs():max(), "input gradient")
    for _, k in ipairs{ "weight", "bias" } do
        local ga, gb = a.params[k].grad, b.params[k].grad
        A.truthy((ga - gb):abs():max() <= 1e-5 * ga:abs():max(), k .. " gradient")
    end
    for _, k in ipairs{ "running_mean", "running_var" } do
        local ra, rb = a.buffers[k], b.buffers[k]
        A.truthy((ra - rb):abs():max() <= 1e-5 * ra:abs():max(), k)
    end
    A.eq(b.buffers.num_batches_tracked:item(), 1)
    -- Evaluation uses the running statistics, as BatchNorm2d does.
    a:evaluate(); b:evaluate()
    A.truthy((a:forward(x) - b:forward(x)):abs():max() <= 1e-5 * 50, "evaluation output")
end)

test("SyncBatchNorm2d: input gradient against central finite differences", function()
    mt.manual_seed(4)
    local x = mt.randn{ 2, 2, 3, 3 }
    local g = mt.randn{ 2, 2, 3, 3 }
    local _, m = bn_pair(2)
    local function loss(input) return (m:forward(input) * g):sum() end
    loss(x)
    local dx = m:backward(x, g)
    local h = 1e-2
    for _, at in ipairs{ { 1, 1, 1, 1 }, { 2, 2, 3, 3 }, { 1, 2, 2, 1 }, { 2, 1, 3, 2 } } do
        local v = x:get(table.unpack(at))
        local xp, xm = x:clone(), x:clone()
        xp:set(v + h, table.unpack(at))
        xm:set(v - h, table.unpack(at))
        local fd = (loss(xp) - loss(xm)) / (2 * h)
        A.near(dx:get(table.unpack(at)), fd, 2e-3, "d loss / d x at " .. table.concat(at, ","))
    end
end)

test("SyncBatchNorm2d.convert swaps every BatchNorm2d of a ResNet, names unchanged", function()
    local net = nn.resnet18{ num_classes = 4 }
    local before = {}
    for k in pairs(net:state_dict()) do before[#before + 1] = k end
    local _, n = nn.SyncBatchNorm2d.convert(net)
    A.eq(n, 20)
    local after = {}
    for k in pairs(net:state_dict()) do after[#after + 1] = k end
    table.sort(before); table.sort(after)
    A.eq(after, before)
    A.truthy(tostring(net.children.bn1):find("SyncBatchNorm2d", 1, true), tostring(net.children.bn1))
    A.raises(function() nn.SyncBatchNorm2d(2):forward(mt.ones{ 1, 2, 1, 1 }) end,
        "more than one value per channel over all 1 ranks")
end)

-- A job module that returns the batch's item indices.
package.preload["dist_test_job"] = function()
    return function() return function(job) return { indices = job.indices } end end
end

local function epoch_batches(opts, epoch)
    local l <close> = data.Loader(opts)
    local out = {}
    for b, batch in l:epoch(epoch) do out[b] = { indices = batch.indices, weight = batch.weight } end
    return out, l:num_batches()
end

test("Loader shard: every batch split in rank blocks that put one process's batches back together", function()
    local base = { module = "dist_test_job", size = 22, batch_size = 6, shuffle = true, drop_last = false, seed = 3 }
    for _, size in ipairs{ 1, 2, 3 } do
        for epoch = 1, 2 do
            local whole, n = epoch_batches(base, epoch)
            local joined = {}
            for rank = 0, size - 1 do
                local opts = setmetatable({ shard = { rank = rank, size = size } }, { __index = base })
                local parts, n_rank = epoch_batches(opts, epoch)
                A.eq(n_rank, n, "every rank runs the same number of batches")
                for b, part in ipairs(parts) do
                    joined[b] = joined[b] or {}
                    table.move(part.indices, 1, #part.indices, #joined[b] + 1, joined[b])
                    -- Each clip's share of the average of the ranks'
                    -- weighted means is its share of the batch mean.
                    A.near(part.weight / (#part.indices * size), 1 / #whole[b].indices, 1e-12,
                        ("weight of rank %d in batch %d"):format(rank, b))
                end
            end
            for b = 1, n do
                A.eq(joined[b], whole[b].indices, ("%d ranks, epoch %d, batch %d"):format(size, epoch, b))
            end
        end
    end
    -- The last batch of 4 over 3 ranks: 2, 1 and 1 clips, weights 1.5, 0.75, 0.75.
    local last = {}
    for rank = 0, 2 do
        local parts = epoch_batches(setmetatable({ shard = { rank = rank, size = 3 } }, { __index = base }), 1)
        last[#last + 1] = { #parts[4].indices, parts[4].weight }
    end
    A.eq(last, { { 2, 1.5 }, { 1, 0.75 }, { 1, 0.75 } })
end)

test("Loader items: the loader covers the given items only, in their order", function()
    local batches, n = epoch_batches({ module = "dist_test_job", items = { 5, 6, 7, 8, 9 }, batch_size = 2,
                                       shuffle = false }, 0)
    A.eq(n, 3)
    A.eq({ batches[1].indices, batches[2].indices, batches[3].indices }, { { 5, 6 }, { 7, 8 }, { 9 } })
    A.eq(batches[1].weight, 1)
    A.raises(function() data.Loader{ module = "dist_test_job", items = 5, batch_size = 2 } end,
        "items must be a list of item indices")
end)

test("all_gather, broadcast_value, main_first, allreduce_numbers, broadcast_buffers in one process", function()
    A.eq(dist.all_gather({ x = 1.25 }), { { x = 1.25 } })
    A.eq(dist.broadcast_value(12345678901), 12345678901)
    A.eq(dist.broadcast_value("seed"), "seed")
    local order = {}
    A.eq(dist.main_first(function() order[#order + 1] = "ran"; return 7 end), 7)
    A.eq(order, { "ran" })
    A.eq(dist.allreduce_numbers({ 2 ^ 53, 1 / 3 }), { 2 ^ 53, 1 / 3 })
    A.raises(function() dist.allreduce_numbers(3) end, "allreduce_numbers: expected a list of numbers")
    A.raises(function() dist.allreduce_numbers({ 1, "x" }) end, "item 2 is a string, not a number")
    local net = nn.Sequential{ nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2) }
    A.eq(dist.broadcast_buffers(net), net)
end)

test("GradReducer:detach: backward no longer reports to the reducer", function()
    local net = small_net():flatten_parameters()
    local r = dist.GradReducer(net, { bucket_mb = 8 * 4 / 2 ^ 20 }):attach(net)
    local x = mt.randn{ 3, 4 }
    net:backward(x, mt.ones(net:forward(x):shape()))
    A.eq(r:started(), #r.buckets)
    r:wait()
    r:detach()
    net:backward(x, mt.ones(net:forward(x):shape()))
    A.eq(r:started(), 0, "no bucket started after detach")
    net:backward(x, mt.ones(net:forward(x):shape())) -- twice: no 'ready twice' either
end)

test("transport: NCCL for CUDA tensors where it is built, host memory otherwise, nothing on one rank", function()
    local function t(device, size, built, setting)
        return dist.transport(device, { size = size, nccl_built = built, setting = setting })
    end
    A.eq(t("cpu", 1, true, ""), "local")
    A.eq(t("cuda", 1, true, ""), "local")
    A.eq(t("cpu", 2, true, ""), "mpi")
    A.eq(t("cpu", 4, false, "0"), "mpi")
    A.eq(t("cuda", 2, true, ""), "nccl")
    A.eq(t("cuda", 2, true, "1"), "nccl")
    A.eq(t("cuda", 2, true, "0"), "host", "MACHRT_NCCL=0 takes the host path")
    A.eq(t("cuda", 2, false, ""), "host", "a build without NCCL (the emulated device) takes the host path")
    A.raises(function() t("cuda", 2, false, "1") end, "MACHRT_NCCL=1, but machrt was built without NCCL")
    A.raises(function() t("cuda", 2, true, "yes") end, "MACHRT_NCCL must be 0", "or 1")
    A.eq(dist.transport("cuda"), "local", "this process: one rank")
    A.raises(function() require("machrt.dist_c").nccl_allreduce(mt.ones{ 2 }) end,
        "tensor is on cpu; NCCL reduces CUDA tensors")
end)

test("data_parallel in a plain run: no conversion, no reducer; bad settings are named", function()
    local train = require "machrt.train"
    local cfg = { environment = { distributed = "auto", sync_batchnorm = true },
                  training = { batch_size = 7, grad_accumulation = 1 }, dataset = { on_error = "skip" } }
    local ranks = train.data_parallel(cfg)
    A.eq(ranks.size, 1)
    A.truthy(ranks.main)
    local net = nn.resnet18{ num_classes = 2, width = 4 }
    A.eq(ranks:wrap(net), net)
    A.truthy(not tostring(net.children.bn1):find("SyncBatchNorm2d", 1, true), "one rank keeps BatchNorm2d")
    A.truthy(not ranks.reducer)
    ranks.reduce_gradients(net)
    local stepper = { loss_sum = 3, seen = 4 }
    ranks:epoch_totals(stepper)
    A.eq({ stepper.loss_sum, stepper.seen }, { 3, 4 })
    A.eq(ranks:finish(net), net)
    cfg.environment.distributed = "always"
    A.raises(function() train.data_parallel(cfg) end, "environment.distributed: 'always' is not auto, none or mpi")
    cfg.environment.distributed, cfg.environment.sync_batchnorm = "none", "yes"
    A.raises(function() train.data_parallel(cfg) end, "environment.sync_batchnorm must be true or false")
end)

return tests
