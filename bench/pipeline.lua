-- wrk script for the p16-256 workload (bench/lib.sh): each write carries 16 GETs of the
-- URL's path, the pipelining of a client that has many small files to fetch. wrk counts
-- every response it reads, so req/s is responses per second.
local depth = 16

init = function(args)
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, nil)
   end
   req = table.concat(r)
end

request = function()
   return req
end
