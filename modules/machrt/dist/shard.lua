-- Which part of a batch each rank takes. Each rank takes one contiguous
-- block, in rank order: the blocks of ranks 0..N-1 put together are the
-- batch as a single process sees it, which is what lets N ranks reproduce
-- one process, and what lets gathered validation results come back in the
-- original row order.
local C = require "machrt.dist_c"

local M = {}

local function count_of(what, n)
    if math.type(n) ~= "integer" or n < 1 then
        error(("%s must be a positive integer, got %s"):format(what, tostring(n)), 3)
    end
end

--- The per-rank batch size of a global batch: an error naming both numbers
--- unless it divides evenly.
function M.local_batch_size(global, size, what)
    size = size or C.size()
    what = what or "the batch size"
    count_of(what, global)
    count_of("the rank count", size)
    if global % size ~= 0 then
        error(("%s %d does not divide by the %d ranks: choose a multiple of %d"):format(what, global, size,
            size), 2)
    end
    return global // size
end

--- This rank's block of `list` (a Lua list) and its weight: the share of
--- the list it holds times the rank count, 1 for an even split (a rank's
--- mean loss times its weight makes the average over ranks the mean over
--- the whole list). opts: rank, size (default this process's), even (default
--- true: a list that does not divide is an error; false: the first
--- #list % size ranks take one more item, and a rank may get none).
function M.shard(list, opts)
    opts = opts or {}
    if type(list) ~= "table" then error("shard: expected a list, got " .. type(list), 2) end
    local size, rank = opts.size or C.size(), opts.rank or C.rank()
    count_of("shard: the rank count", size)
    if math.type(rank) ~= "integer" or rank < 0 or rank >= size then
        error(("shard: rank %s is not in 0..%d"):format(tostring(rank), size - 1), 2)
    end
    local n = #list
    if opts.even ~= false and n % size ~= 0 then
        error(("shard: a batch of %d items does not divide by the %d ranks"):format(n, size), 2)
    end
    local base, extra = n // size, n % size
    local first = rank * base + math.min(rank, extra) + 1
    local len = base + (rank < extra and 1 or 0)
    local part = table.move(list, first, first + len - 1, 1, {})
    return part, n > 0 and len * size / n or 0
end

return M
