-- Run under mpirun by tests/lua/test_dist_mpi.lua. Every rank makes the same
-- global batch and takes its own block of rows; rank 0 also runs the
-- single-process reference (plain nn.BatchNorm2d over the whole batch) and
-- prints one JSON object with the largest differences and the size of what
-- was compared. arg[1]: where rank 0 saves the trained weights (the test
-- compares two runs byte for byte).
local mt = require "machrt"
local sys = require "machrt.sys"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local dist = require "machrt.dist"

local rank, size = dist.rank(), dist.size()
local out = { size = size }

local function rows_of(t, n) return t:narrow(1, rank * n + 1, n) end
local function max_diff(a, b) return (a - b):abs():max() end
local function flat2(t) return t:reshape{ t:size(1), t:numel() // t:size(1) } end

-- ---- one layer: forward, backward, running statistics -----------------
local B, C = 4, 3
mt.manual_seed(11)
local x = mt.randn{ B, C, 5, 6 } * 3 + 10 -- a mean large against the spread
local w = mt.randn{ B, C, 5, 6 }
local weight, bias = mt.tensor{ 1.5, -0.5, 2 }, mt.tensor{ 0.1, 0.2, 0.3 }
local function layer(class)
    local m = class(C)
    m.params.weight.param:copy(weight)
    m.params.bias.param:copy(bias)
    return m
end
local n = B // size
local sync = layer(nn.SyncBatchNorm2d)
local xl, wl = rows_of(x, n):contiguous(), rows_of(w, n):contiguous()
local y = dist.gather_rows(flat2(sync:forward(xl)))
local dx = dist.gather_rows(flat2(sync:backward(xl, wl)))
local dweight = dist.allreduce(sync.params.weight.grad:clone(), "sum")
local dbias = dist.allreduce(sync.params.bias.grad:clone(), "sum")
if rank == 0 then
    local ref = layer(nn.BatchNorm2d)
    local ry = ref:forward(x)
    local rdx = ref:backward(x, w)
    out.layer = {
        y = max_diff(y, flat2(ry)), y_scale = ry:abs():max(),
        dx = max_diff(dx, flat2(rdx)), dx_scale = rdx:abs():max(),
        dweight = max_diff(dweight, ref.params.weight.grad), dweight_scale = ref.params.weight.grad:abs():max(),
        dbias = max_diff(dbias, ref.params.bias.grad), dbias_scale = ref.params.bias.grad:abs():max(),
        running_mean = max_diff(sync.buffers.running_mean, ref.buffers.running_mean),
        running_var = max_diff(sync.buffers.running_var, ref.buffers.running_var),
    }
end

-- ---- parameter gradients whose rank parts cancel --------------------------
-- The second half of the batch receives the negated gradient of the first
-- plus a small part: each rank's sum(dy) is large, the total small. The
-- reference sums all rows at once; float rank parts would leave the total
-- with their rounding (about 1e-7 of the parts, far more than 1e-5 of it).
do
    mt.manual_seed(12)
    local xc = mt.randn{ B, C, 5, 6 }
    local half = mt.randn{ B // 2, C, 5, 6 } * 1000
    local wc = mt.empty{ B, C, 5, 6 }
    wc:narrow(1, 1, B // 2):copy(half)
    wc:narrow(1, B // 2 + 1, B // 2):copy(-half + mt.randn{ B // 2, C, 5, 6 } * 0.01)
    local s = layer(nn.SyncBatchNorm2d)
    s:forward(rows_of(xc, n):contiguous())
    s:backward(rows_of(xc, n):contiguous(), rows_of(wc, n):contiguous())
    -- Summed over ranks in float32, as the reducer does (each rank's loss
    -- here is not scaled by the rank count, so the sum is the total).
    local db = dist.allreduce(s.params.bias.grad:clone(), "sum")
    local dw = dist.allreduce(s.params.weight.grad:clone(), "sum")
    if rank == 0 then
        local ref = layer(nn.BatchNorm2d)
        ref:forward(xc)
        ref:backward(xc, wc)
        out.cancel = {
            dbias = max_diff(db, ref.params.bias.grad), dbias_scale = ref.params.bias.grad:abs():max(),
            dweight = max_diff(dw, ref.params.weight.grad), dweight_scale = ref.params.weight.grad:abs():max(),
        }
    end
end

-- ---- a few SGD steps of a small network ---------------------------------
local function net()
    mt.manual_seed(5)
    return nn.Sequential{ nn.Conv2d(1, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(),
                                                nn.Conv2d(4, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(),
                                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2) }:flatten_parameters()
end
local GB, STEPS = 8, 3
local function train(model, images, targets, reducer)
    local loss = nn.BCEWithLogitsLoss()
    local opt = optim.SGD(model:parameters(), { lr = 0.5, momentum = 0.9 })
    -- Each module reports its parameters ready as its backward returns.
    if reducer then reducer:attach(model) end
    for _ = 1, STEPS do
        opt:zero_grad()
        local logits = model:forward(images)
        loss:forward(logits, targets)
        model:backward(images, loss:backward(logits, targets))
        if reducer then
            assert(reducer:started() == #reducer.buckets, "every bucket started during backward")
            reducer:wait()
        end
        opt:step()
    end
    return model
end
mt.manual_seed(21)
local images = mt.randn{ GB, 1, 6, 6 } + 2
local targets = mt.zeros{ GB, 2 }
for i = 1, GB do targets:set(1, i, i % 2 + 1) end
local model = nn.SyncBatchNorm2d.convert(net())
dist.broadcast_module(model)
local ln = GB // size
train(model, rows_of(images, ln):contiguous(), rows_of(targets, ln):contiguous(),
            dist.GradReducer(model, { bucket_mb = 16 * 4 / 2 ^ 20 }))
local spread = dist.allreduce(model.flat_params:clone(), "max") - dist.allreduce(model.flat_params:clone(), "min")
out.ranks_agree = spread:abs():max()
if rank == 0 then
    local ref = train(net(), images, targets)
    out.train = { params = max_diff(model.flat_params, ref.flat_params), params_scale = ref.flat_params:abs():max(),
                                running_var = max_diff(model.children["4"].buffers.running_var, ref.children["4"].buffers.running_var) }
    if arg[1] then mt.save(arg[1], { params = model.flat_params }) end
    print(sys.json_encode(out))
end
