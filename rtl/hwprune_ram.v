// One on-chip memory of the hwprune top level (hand-written, instantiated by hwprune.rtl.memory).
//
// DEPTH words of WIDTH bits; one read port (registered when SYNC_READ, else combinational) and
// one write port, both on clk.  A read in the cycle of a write to the same address returns the
// old word, as Amaranth's lib.memory.Memory does.  With READMEMH the simulator loads the memory
// at time 0 from the $readmemh file named by the plusarg +NAME=FILE.hex; no per-word initial
// contents exist anywhere, so one build serves every layer and its size does not depend on DEPTH.
module hwprune_ram #(
    parameter WIDTH = 8,
    parameter DEPTH = 1,
    parameter ABITS = 1,
    parameter SYNC_READ = 1,
    parameter READMEMH = 0,
    parameter NAME = "mem"
) (
    input  wire             clk,
    input  wire [ABITS-1:0] raddr,
    output wire [WIDTH-1:0] rdata,
    input  wire             we,
    input  wire [ABITS-1:0] waddr,
    input  wire [WIDTH-1:0] wdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [WIDTH-1:0] q;

    generate
        if (READMEMH) begin : load
            reg [8*1024-1:0] file;
            initial if ($value$plusargs({NAME, "=%s"}, file)) $readmemh(file, mem);
        end
    endgenerate

    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        q <= mem[raddr];
    end

    assign rdata = SYNC_READ ? q : mem[raddr];
endmodule
