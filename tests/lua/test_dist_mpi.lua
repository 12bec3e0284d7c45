-- machrt.dist across 2 ranks under mpirun: collective values, the bucketed
-- reducer against one plain allreduce, bit-identical reruns, sync batch norm
-- against one process on the whole batch, and a failing or killed rank
-- ending the job within seconds with the rank named. Then
-- experiments/resnet34.lua trained data-parallel on the tiny corpus of
-- test_experiment.lua: against one process, run to run, killed and resumed.
local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local F = require "files"
local mpi = require "mpi"
local X = require "tiny_experiment"

local tests, test, tmpdir = F.suite()

local function mpirun(args, seconds)
    local t0 = mt.clock()
    local code, text = F.run(mpi.command(2, args, seconds))
    return code, text, mt.clock() - t0
end

-- The one JSON line rank 0 printed.
local function result(code, text)
    A.eq(code, 0, "exit status; output:\n" .. text)
    local line = text:match("(%b{})%s*$")
    A.truthy(line, "no JSON result in the output:\n" .. text)
    return sys.json_decode(line)
end

test("allreduce, broadcast, barrier, gather, shards, broadcast_module, reducer on 2 ranks", function()
    local dir = tmpdir()
    local r = result(mpirun("tests/dist/collectives.lua " .. dir .. "/a.safetensors"))
    A.eq(r.size, 2)
    -- Rank r holds i + 10 r for i = 0..4.
    local sum, mean, max, min = {}, {}, {}, {}
    for i = 0, 4 do
        sum[#sum + 1], mean[#mean + 1] = (i) + (i + 10), ((i) + (i + 10)) / 2
        max[#max + 1], min[#min + 1] = i + 10, i
    end
    A.eq(r.sum, sum); A.eq(r.mean, mean); A.eq(r.max, max); A.eq(r.min, min)
    A.eq(r.numbers[1], 3, "rank parts 2^53 and -2^53 + 3 reduced in double")
    A.eq(r.numbers_mean, { 0.5 })
    A.eq(r.transport, { cpu = "mpi", cuda = r.transport.nccl_built and "nccl" or "host",
                        nccl_built = r.transport.nccl_built }, "CPU tensors over MPI; CUDA ones by NCCL where built")
    A.eq(r.broadcast, { 8, 8, 8 }, "rank 1's value (1 + 7) everywhere")
    A.eq(r.broadcast_int, { 3, 3 }, "int64 tensors broadcast too")
    A.eq(r.strided, { { 1, 3, 5 }, { 7, 9, 11 } }, "a transposed view reduced element by element: v + (v + 1)")
    for rank, s in ipairs(r.barrier_seconds) do
        A.truthy(s >= 0.45, ("rank %d left the barrier after %.3f s, before the late rank arrived"):format(rank - 1, s))
    end
    A.eq(r.gather, { { rank = 0, name = "r0" }, { rank = 1, name = "r1" } })
    A.eq(r.gather_rows, { { 0, 0 }, { 1, 1 }, { 1, 1 } }, "1 row from rank 0, 2 from rank 1, in rank order")
    A.eq(r.shards, { { 101, 102, 103, 104 }, { 105, 106, 107, 108 } })
    A.eq(r.module_spread, 0, "every rank holds rank 0's weights")
    A.eq(r.buffer_after, { 1, 1, 1 }, "buffers come from rank 0 (rank 0 set them to 1, rank 1 to 2)")
    A.truthy(r.buckets > 1, "the reducer cut several buckets")
    A.eq(r.started_before_wait, r.buckets, "every bucket started as its last parameter became ready")
    A.eq(r.reducer_vs_plain, 0, "bucketed reduction is bit-identical to one plain allreduce")
    A.eq(r.second_step_vs_plain, 0, "and again on the next step")
    -- The same program again: the same bits.
    result(mpirun("tests/dist/collectives.lua " .. dir .. "/b.safetensors"))
    A.truthy(F.read(dir .. "/a.safetensors") == F.read(dir .. "/b.safetensors"),
        "two runs reduce to the same bytes")
end)

-- Tolerance: 1e-5 of the largest magnitude compared, about 80 float32 ulps.
-- The two sides sum the same values in another order (two blocks of rows
-- and a two-pass variance against one pass over all rows), which moves
-- results by a few ulps; a wrong or missing term of the gradient moves them
-- by percents.
local function within(diff, scale, what)
    A.truthy(diff <= 1e-5 * scale, ("%s differs by %.3g (scale %.3g, tolerance 1e-5 of it)"):format(what, diff, scale))
end

test("sync batch norm on 2 ranks equals one process on the whole batch; reruns are bit-identical", function()
    local dir = tmpdir()
    local r = result(mpirun("tests/dist/sync_batchnorm.lua " .. dir .. "/a.safetensors"))
    A.eq(r.size, 2)
    local l = r.layer
    within(l.y, l.y_scale, "output")
    within(l.dx, l.dx_scale, "input gradient")
    within(l.dweight, l.dweight_scale, "weight gradient (summed over ranks)")
    within(l.dbias, l.dbias_scale, "bias gradient (summed over ranks)")
    within(r.cancel.dbias, r.cancel.dbias_scale, "bias gradient whose rank parts cancel")
    within(r.cancel.dweight, r.cancel.dweight_scale, "weight gradient whose rank parts cancel")
    within(l.running_mean, 10, "running mean")
    within(l.running_var, 1, "running variance")
    A.eq(r.ranks_agree, 0, "both ranks hold the same weights after training")
    within(r.train.params, r.train.params_scale, "weights after 3 SGD steps (global batch 8)")
    within(r.train.running_var, 1, "running variance after 3 steps")
    result(mpirun("tests/dist/sync_batchnorm.lua " .. dir .. "/b.safetensors"))
    A.truthy(F.read(dir .. "/a.safetensors") == F.read(dir .. "/b.safetensors"),
        "two 2-rank runs train to the same bytes")
end)

test("a rank that raises an error ends the job within seconds, naming the rank", function()
    local code, text, seconds = mpirun("tests/dist/fail.lua error", 60)
    A.truthy(code ~= 0, "exit status " .. tostring(code))
    A.truthy(seconds < 15, ("the job took %.1f s (rank 0 sleeps 30 s unless stopped)"):format(seconds))
    A.truthy(text:find("rank 1 of 2: tests/dist/fail.lua:%d+: deliberate failure in the training step"), text)
    A.truthy(text:find("MPI_Abort", 1, true), text)
    A.truthy(not text:find("rank 0 was never stopped", 1, true), text)
end)

test("a rank killed by SIGKILL ends the job within seconds, naming the rank", function()
    local code, text, seconds = mpirun("tests/dist/fail.lua kill", 60)
    A.truthy(code ~= 0, "exit status " .. tostring(code))
    A.truthy(seconds < 15, ("the job took %.1f s (rank 0 sleeps 30 s unless stopped)"):format(seconds))
    A.truthy(text:find("process rank 1 with PID %d+ on node %S+ exited on signal 9"), text)
    A.truthy(not text:find("rank 0 was never stopped", 1, true), text)
end)

test("MACHRT_DISTRIBUTED=none under mpirun: each process runs alone", function()
    local code, text = F.run(mpi.command(2, "-e 'io.write(require(\"machrt.dist\").size(), \"\\n\")'")
        :gsub("^env ", "env MACHRT_DISTRIBUTED=none "))
    A.eq(code, 0, text)
    A.eq(text, "1\n1\n")
end)

-- ---- data-parallel experiment runs ---------------------------------------

local corpus
local function tiny_corpus()
    corpus = corpus or X.corpus(tmpdir{ create = false, keep = true })
    return corpus
end

-- experiments/resnet34.lua on `np` ranks; returns code, output, seconds.
local function experiment(np, args, env, seconds)
    local t0 = mt.clock()
    local cmd = mpi.command(np, "experiments/resnet34.lua " .. args, seconds)
    local code, text = F.run(env and cmd:gsub("^env ", "env " .. env .. " ") or cmd)
    return code, text, mt.clock() - t0
end

local function count(text, pattern)
    local n = 0
    for _ in text:gmatch(pattern) do n = n + 1 end
    return n
end

-- Between two checkpoints: the largest difference of the parameters and the
-- largest parameter; the largest difference of a running statistic
-- relative to the largest value of its tensor (not the optimizer state).
local function weight_differences(a, b)
    local diff, scale, stats = 0, 0, 0
    for name, x in pairs(a) do
        if not name:match("^state%.") and x:dtype() == "float32" and x:numel() > 0 then
            local d = (x - b[name]):abs():max()
            if name:match("running_") then
                stats = math.max(stats, d / x:abs():max())
            else
                diff, scale = math.max(diff, d), math.max(scale, x:abs():max())
            end
        end
    end
    return diff, scale, stats
end

local function lines(path)
    local l = {}
    for line in F.read(path):gmatch("[^\n]+") do l[#l + 1] = line end
    return l
end

-- One SGD step on a global batch of 8 (--dataset.data_sample=0.25 keeps 8
-- of the 32 training clips): the 2-rank run sums the same values in another
-- order (convolution gradients in two halves, batch statistics in double
-- over two parts), and nothing else may differ. Measured: parameters 2.0e-8
-- of the largest one (the GeM exponent, 3), running statistics 5.9e-7 of
-- their tensor's largest value; with local batch statistics instead
-- (sync_batchnorm off) 4.7e-4 and 0.13, so the tolerances below (1e-6 and
-- 1e-5) tell the two apart by more than 400 times.
-- Not after several steps: a per-sample convolution output may differ in
-- its last bit with the batch it is computed in (the GEMM's blocking
-- follows the batch's size), a max-pool or ReLU decision near a tie can
-- then flip, and one flipped decision moves the stem's weight gradient
-- (log-mel inputs near -100 dB) by lr times a term of it. After 4 steps
-- that measured 1.2e-7 of the largest parameter on one CPU and 3.1e-5 on
-- another (AVX2 only), where 1 and 2 threads of one process stayed 1e-8
-- apart: which CPU meets a tie decides, not the sync batch norm.
-- SGD rather than AdamW: Adam's first step is lr times the sign of each
-- gradient, so a near-zero gradient that rounds the other way moves a
-- weight by 2 lr, and no float tolerance below lr would hold.
test("mpirun -np 2 with sync_batchnorm trains the weights of one process on the same global batch, "
     .. "bit-identical run to run; only rank 0 writes", function()
    local data = tiny_corpus()
    local one, step1, step2, a, b = tmpdir(), tmpdir(), tmpdir(), tmpdir(), tmpdir()
    -- fp32 GEMMs: with bf16 operands (mixed precision on a CPU that has
    -- them) an activation 1e-7 apart can round to the neighbouring bf16,
    -- 4e-3 away, and the tolerances above are fp32's.
    local settings = " --training.epochs=1 --training.optimizer=SGD --environment.sync_batchnorm=true"
        .. " --training.run_interpretations=false --training.build_scoring_pipelines=false"
        .. " --environment.mixed_precision_training=false"
    local one_step = settings .. " --dataset.data_sample=0.25"
    local code, text = X.run(X.args(data, step1) .. one_step)
    A.eq(code, 0, "single process, one step; output:\n" .. text)
    A.truthy(lines(X.fold_dir(step1) .. "/log.csv")[2]:find("^1,1,"), "one step in the epoch")
    code, text = experiment(2, X.args(data, step2) .. one_step)
    A.eq(code, 0, "2 ranks, one step; output:\n" .. text)
    local ckpt = "/" .. require("machrt.train").CHECKPOINT
    local diff, scale, stats = weight_differences(mt.load(X.fold_dir(step1) .. ckpt),
                                                  mt.load(X.fold_dir(step2) .. ckpt))
    A.truthy(diff <= 1e-6 * scale, ("parameters differ by %.3g after one step (largest %.3g, tolerance 1e-6 of it)")
        :format(diff, scale))
    A.truthy(stats <= 1e-5, ("running statistics differ by %.3g of their largest value after one step "
        .. "(tolerance 1e-5)"):format(stats))

    code, text = X.run(X.args(data, one) .. settings)
    A.eq(code, 0, "single process; output:\n" .. text)
    code, text = experiment(2, X.args(data, a) .. settings)
    A.eq(code, 0, "2 ranks; output:\n" .. text)
    A.eq(count(text, "data%-parallel: 2 ranks, 4 clips per rank of each batch of 8, sync_batchnorm true"), 1,
        "rank 0 alone prints:\n" .. text)
    A.truthy(text:find("the 2 ranks hold identical weights", 1, true), text)
    code, text = experiment(2, X.args(data, b) .. settings)
    A.eq(code, 0, "2 ranks again; output:\n" .. text)
    local ranks = mt.load(X.fold_dir(a) .. ckpt)
    A.truthy(X.same_tensors(ranks, mt.load(X.fold_dir(b) .. ckpt)) > 100, "weights and optimizer state compared")

    -- Validation: both ranks' clips gathered back in order, rank 0 writes.
    local p1, p2 = lines(X.fold_dir(one) .. "/val_predictions.csv"), lines(X.fold_dir(a) .. "/val_predictions.csv")
    A.eq(#p2, 9, "header + the 8 validation clips of both ranks")
    for i = 1, #p1 do
        local f1, f2 = p1[i]:match("^([^,]*,[^,]*,[^,]*)"), p2[i]:match("^([^,]*,[^,]*,[^,]*)")
        A.eq(f2, f1, "row " .. i .. " of val_predictions.csv")
    end
    A.eq(sys.json_decode(F.read(X.fold_dir(a) .. "/metrics.json")).validation_clips, 8)
    A.eq(#lines(X.fold_dir(a) .. "/log.csv"), 2, "header + one epoch")
end)

test("mpirun -np 2 without sync_batchnorm: the run completes, the ranks agree, the run folder is whole", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = experiment(2, X.args(data, out))
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("the 2 ranks hold identical weights", 1, true), text)
    local dir = X.fold_dir(out)
    for _, f in ipairs{ "config.json", "log.csv", "checkpoint.safetensors", "val_predictions.csv", "metrics.json",
                        "curves.png", "index.html", "scorer/model.safetensors" } do
        A.truthy(F.exists(dir .. "/" .. f), f .. " missing; output:\n" .. text)
    end
    local log_lines = lines(dir .. "/log.csv")
    A.truthy(log_lines[3]:find("^2,8,"), "4 global steps per epoch, as one process takes: " .. log_lines[3])
    A.eq(sys.json_decode(F.read(dir .. "/config.json")).environment.distributed, "auto")
end)

test("mpirun -np 2: a batch size that does not divide by the ranks is an error naming both", function()
    local code, text = experiment(2, X.args(tiny_corpus(), tmpdir()) .. " --training.batch_size=7", nil, 60)
    A.truthy(code ~= 0, "exit status " .. tostring(code))
    A.truthy(text:find("training.batch_size 7 does not divide by the 2 ranks", 1, true), text)
end)

test("a rank killed mid-epoch ends the job naming it; --resume on 1 process continues from the checkpoint; "
     .. "rank 0 refuses a fresh start there", function()
    local data, out = tiny_corpus(), tmpdir()
    local args = X.args(data, out) .. " --training.epochs=3 --training.run_interpretations=false"
    -- Rank 1 dies right after step 6, in epoch 2 (the epoch-1 checkpoint is on disk).
    local code, text, seconds = experiment(2, args, "MACHRT_KILL_AT_STEP=6 MACHRT_KILL_RANK=1", 90)
    A.truthy(code ~= 0, "the job must fail; output:\n" .. text)
    A.truthy(text:find("process rank 1 with PID %d+ on node %S+ exited on signal 9"), text)
    A.truthy(seconds < 45, ("the job took %.1f s: rank 0 was left waiting"):format(seconds))
    local dir = X.fold_dir(out)
    local _, meta = mt.load(dir .. "/checkpoint.safetensors")
    A.eq(sys.json_decode(meta["machrt.run"]).epoch, 1, "the last checkpoint is epoch 1's")
    local before = lines(dir .. "/log.csv")
    code, text = X.run("--resume " .. dir)
    A.eq(code, 0, "resumed on 1 process; output:\n" .. text)
    A.truthy(text:find("resuming " .. dir .. " after epoch 1 ", 1, true), text)
    local after = lines(dir .. "/log.csv")
    A.eq(#after, 4, "header + 3 epochs")
    A.eq(after[2], before[2], "epoch 1 as the 2-rank run logged it")
    A.truthy(after[4]:find("^3,12,"), after[4])
    -- The folder now holds a run: rank 0, which alone locks it, refuses a
    -- fresh start, and the job ends with its message.
    code, text, seconds = experiment(2, args, nil, 60)
    A.truthy(code ~= 0, "a fresh run into a used folder must fail")
    A.truthy(text:find("run folder " .. dir .. " already holds a run", 1, true), text)
    A.truthy(text:find("rank 0 of 2", 1, true), text)
end)

return tests
