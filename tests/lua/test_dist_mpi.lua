-- machrt.dist across 2 ranks under mpirun: collective values, the bucketed
-- reducer against one plain allreduce, bit-identical reruns, sync batch norm
-- against one process on the whole batch, and a failing or killed rank
-- ending the job within seconds with the rank named.
local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local F = require "files"
local mpi = require "mpi"

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

return tests
