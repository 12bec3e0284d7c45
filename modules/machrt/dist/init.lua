-- machrt.dist: collectives for data-parallel runs under mpirun or srun.
--
--   local dist = require "machrt.dist"
--   dist.rank(), dist.size(), dist.is_main()      -- 0 of 1 in a plain run
--   dist.allreduce(t, "sum" | "mean" | "max" | "min")   -- in place, returns t
--   dist.allreduce_numbers({x, ...}, op)          -- a list, reduced in double
--   dist.transport(device)                        -- "local" | "mpi" | "nccl" | "host"
--   dist.broadcast(t, root)                       -- in place, returns t
--   dist.barrier()
--   dist.broadcast_module(model)                  -- rank 0's parameters and buffers
--   dist.gather(value) / dist.gather_rows(t)      -- to rank 0, in rank order
--   dist.all_gather(value)                        -- every rank's value, on every rank
--   dist.broadcast_value(value, root)             -- rank root's JSON-encodable value everywhere
--   dist.broadcast_buffers(model)                 -- rank 0's buffers (running statistics)
--   dist.main_first(fn)                           -- rank 0 runs fn, then the others
--   dist.GradReducer(model, {bucket_mb = 25})     -- bucketed gradient averaging
--   dist.shard(list, opts)                        -- this rank's part of a batch
--
-- The host starts MPI when an MPI launcher started it (README,
-- "Distributed"). In a plain run every call is a no-op that still checks its
-- arguments, so single-process code needs no branches.
local mt = require "machrt"
local sys = require "machrt.sys"
local C = require "machrt.dist_c"
local shard = require "machrt.dist.shard"

local M = {}

M.MODES = { auto = true, none = true, mpi = true }

function M.rank() return C.rank() end
function M.size() return C.size() end
function M.is_main() return C.rank() == 0 end
function M.active() return C.active() end

--- Applies environment.distributed ("auto", "none" or "mpi"): "mpi" is an
--- error when no MPI launcher started the process, "none" when MPI is
--- already running with several ranks (each would write the same run
--- folder). Returns the rank count.
function M.setup(mode)
    mode = mode or "auto"
    if not M.MODES[mode] then
        error(("environment.distributed: '%s' is not auto, none or mpi"):format(tostring(mode)), 2)
    end
    if mode == "none" and C.size() > 1 then
        error(("environment.distributed = none, but this is rank %d of %d under an MPI launcher: "
            .. "run without mpirun, or set it to auto"):format(C.rank(), C.size()), 2)
    end
    local ok, err = pcall(C.init, mode)
    if not ok then error("environment.distributed: " .. tostring(err), 2) end
    return C.size()
end

-- Device tensors and strided views go through a contiguous CPU copy: MPI
-- reads host memory, in order.
local function staged(t, what, fn)
    if not mt.is_tensor(t) then error(("%s: expected a tensor, got %s"):format(what, type(t)), 3) end
    if t:device() == "cpu" and t:is_contiguous() then
        fn(t)
        return t
    end
    local host = t:to("cpu"):contiguous()
    fn(host)
    t:copy(host:to(t:device()))
    return t
end

--- How a tensor on `device` is reduced across ranks: "local" (one rank:
--- nothing moves), "mpi" (host memory), "nccl" (a CUDA tensor in a build
--- with NCCL: on the GPUs), "host" (a device tensor copied to host memory
--- and reduced over MPI: no NCCL in this build, or MACHRT_NCCL=0).
--- MACHRT_NCCL=1 makes a missing NCCL an error. opts, for tests: size,
--- nccl_built, setting (the MACHRT_NCCL value).
function M.transport(device, opts)
    opts = opts or {}
    local size = opts.size or C.size()
    local built = opts.nccl_built
    if built == nil then built = C.nccl_built() end
    local setting = opts.setting
    if setting == nil then setting = os.getenv("MACHRT_NCCL") or "" end
    if setting ~= "" and setting ~= "0" and setting ~= "1" then
        error(("MACHRT_NCCL must be 0 (device tensors through host memory) or 1 (NCCL), got '%s'"):format(setting), 2)
    end
    if setting == "1" and not built then
        error("MACHRT_NCCL=1, but machrt was built without NCCL (build with make CUDA=1)", 2)
    end
    if size == 1 then return "local" end
    if device == "cpu" then return "mpi" end
    if built and setting ~= "0" then return "nccl" end
    return "host"
end

function M.allreduce(t, op)
    if mt.is_tensor(t) and t:device() ~= "cpu" and t:is_contiguous() and M.transport(t:device()) == "nccl" then
        C.nccl_allreduce(t, op or "sum")
        return t
    end
    return staged(t, "allreduce", function(h) C.allreduce(h, op or "sum") end)
end

--- A list of numbers reduced in double precision on every rank; returns
--- the reduced list (a new table).
function M.allreduce_numbers(list, op)
    if type(list) ~= "table" then error("allreduce_numbers: expected a list of numbers, got " .. type(list), 2) end
    return C.allreduce_numbers(list, op or "sum")
end

function M.broadcast(t, root)
    return staged(t, "broadcast", function(h) C.broadcast(h, root or 0) end)
end

function M.barrier() C.barrier() end
function M.broadcast_string(s, root) return C.broadcast_string(s, root or 0) end

local function sorted_state(model)
    local sd = model:state_dict()
    local names = {}
    for name in pairs(sd) do names[#names + 1] = name end
    table.sort(names) -- the same order on every rank
    return sd, names
end

--- Copies rank `root`'s (default 0) parameters and buffers into every
--- rank's model, so all start from the same weights. The models must have
--- the same names and shapes: a rank whose model differs stops the job
--- with the difference named.
function M.broadcast_module(model, root)
    root = root or 0
    local sd, names = sorted_state(model)
    local layout = {}
    for i, name in ipairs(names) do layout[i] = name .. ":" .. table.concat(sd[name]:shape(), "x") end
    layout = table.concat(layout, ";")
    local theirs = C.broadcast_string(layout, root)
    if theirs ~= layout then
        C.abort(("broadcast_module: the model on rank %d differs from rank %d's (names or shapes)")
            :format(C.rank(), root))
    end
    for _, name in ipairs(names) do M.broadcast(sd[name], root) end
    return model
end

--- Gathers one JSON-encodable value per rank to `root` (default 0): there,
--- the list of every rank's value in rank order; elsewhere nil. Numbers
--- travel with 17 digits, so floats arrive exactly.
function M.gather(value, root)
    local texts = C.gather_strings(sys.json_encode(value), root or 0)
    if not texts then return nil end
    local out = {}
    for r, text in ipairs(texts) do out[r] = sys.json_decode(text, "gather from rank " .. (r - 1)) end
    return out
end

--- Every rank's value, in rank order, on every rank (gather, then one
--- broadcast of the list).
function M.all_gather(value)
    local mine = M.gather(value, 0)
    local text = C.broadcast_string(mine and sys.json_encode(mine) or "", 0)
    return sys.json_decode(text, "all_gather")
end

--- Rank `root`'s (default 0) JSON-encodable value on every rank: a value
--- drawn on one rank (a seed) that all must share.
function M.broadcast_value(value, root)
    local text = C.broadcast_string(sys.json_encode({ value }), root or 0)
    return sys.json_decode(text, "broadcast_value")[1]
end

--- Copies rank `root`'s buffers (batch norm's running statistics) into every
--- rank's model: ranks that normalise with local batch statistics drift
--- apart there, while their parameters stay equal.
function M.broadcast_buffers(model, root)
    if C.size() == 1 then return model end
    local names = {}
    model:apply(function(m)
        for _, n in ipairs(m.buffer_order) do names[#names + 1] = { m, n } end
    end)
    for _, mn in ipairs(names) do M.broadcast(mn[1].buffers[mn[2]], root or 0) end
    return model
end

--- Runs fn on rank 0 first and on the other ranks after it returned (a
--- corpus generated once, then found by the others); returns fn's result.
function M.main_first(fn)
    if C.size() == 1 then return fn() end
    -- A failure on rank 0 ends the job (the host aborts every rank).
    if C.rank() ~= 0 then C.barrier() end
    local result = fn()
    if C.rank() == 0 then C.barrier() end
    return result
end

--- Gathers each rank's rows of a 2-d tensor (any row count, the same
--- column count) to `root`, stacked in rank order; nil elsewhere.
function M.gather_rows(t, root)
    if not mt.is_tensor(t) or t:dim() ~= 2 then
        error("gather_rows: expected a 2-d tensor (rows x columns)", 2)
    end
    local parts = M.gather({ cols = t:size(2), rows = t:totable() }, root)
    if not parts then return nil end
    local rows, cols = {}, parts[1].cols
    for r, p in ipairs(parts) do
        if p.cols ~= cols then
            error(("gather_rows: rank %d sent %d columns, rank 0 %d"):format(r - 1, p.cols, cols), 2)
        end
        table.move(p.rows, 1, #p.rows, #rows + 1, rows)
    end
    if #rows == 0 then return mt.zeros{ 0, cols } end
    return mt.tensor(rows)
end

M.shard = shard.shard
M.local_batch_size = shard.local_batch_size
M.GradReducer = require "machrt.dist.reducer"

return M
