// Private to engine*.c: the workspace and the blocks every family
// composes. engine.c owns the workspace, the blocks and the batch driver;
// engine_encoder.c and engine_decoder.c only say in which order the blocks run.
#ifndef MASKLRP_ENGINE_H
#define MASKLRP_ENGINE_H

#include "masklrp.h"

// The forward cache of a chunk of S consecutive sequences plus the scratch of
// both sweeps, as named pointers into one allocation (llm.c style). Row-wise
// ops (linears, norms, MLP) run on all N = S·T rows at once so the GEMMs are
// tall; attention runs per sequence and head. QKV = (H + 2 KV) D, HD = H D,
// FU = F (or 2F when gated). Attention runs in blocks of `block` query rows (engine.c):
// nothing here is (T,T).
typedef struct {
    ptrdiff_t S, T, N;
    ptrdiff_t block;          // query rows per attention block
    bool fc_cached;           // the MLP's pre-activations are cached (fc), else its input (mlp_in)
    float *mem;               // the one allocation everything below points into
    ptrdiff_t capacity, max_S; // its size in floats; sequences `last` has room for
    // the chunk being processed: (S,T) slices of the call's arrays
    const int64_t *ids, *positions, *types, *mask;
    const float *embeds;      // (S,T,E) the call's word embeddings, or NULL: the table rows of ids
    ptrdiff_t *row;           // (S) the row a first/last-pooled head reads in each sequence
                              // for the seed being swept: the pool's own, or the call's rows
    // A first/last-pooled head reads one row per sequence of the last layer, so
    // when no tap wants the others and every seed reads the pool's own row, the
    // last layer computes only those rows: its queries, residual, norms and MLP
    // (exact: nothing else reaches the logits; the layer's keys and values still
    // cover every row). Its row-wise caches then hold S rows, one per sequence.
    bool pruned;
    // forward cache: what the backward reads
    float *emb;               // (N,E) embedding sum (input of the embedding norm, if any)
    float *emb_normed;        // (N,E) emb_proj: the normed embeddings, input of the projection
    float *x;                 // (L+1,N,C) hidden states: input of layer l, x[L] = last output
    float *q, *k, *v;         // (L,S,H,T,D), (L,S,KV,T,D) x2: head-major, after RoPE
    float *qk_raw, *qk_rstd;  // qk_norm: (L,S,H+KV,T,D) q and k heads before their norm; (L,S,H+KV,T)
    float *ctx;               // (L,N,HD) heads' outputs A·V: the relevance a head receives (Mask-LRP)
    float *mid;               // (L,N,C) residual stream after the attention branch
    float *res2;              // (L,N,C) encoder: input of the MLP's LayerNorm
    float *fc;                // (L,N,FU) when fc_cached, else (N,FU) scratch: MLP pre-activations
                              // ([gate | up] rows when gated)
    float *mlp_in;            // (L,N,C) unless fc_cached: the MLP's input, to recompute fc from
    float *stats;             // (L+1,4,2,N) norm mean, rstd; slot 0: embedding/final norm, 1+l: layer l
                              // (its pre-attention, pre-MLP, post-attention, post-MLP norms)
    float *branch_out;        // (L,2,N,C) post_norms: each layer's attention and MLP outputs, before their norms
    float *raw_logits;        // (S or N,NO) final_softcap: the logits before capping
    // mixture of experts (Model.X > 0), NK = N·K routed rows ("slots", row·K + k), cached in
    // each layer's expert order: the slots of expert 0, then of expert 1, ... (rows ascending)
    float *router_p;          // (L,N,X) router probabilities
    float *route_w;           // (L,N,K) routing weights of each row's experts
    int32_t *route;           // (L,N,K) each row's K experts, most probable first
    int32_t *slots;           // (L,NK) the slots in expert order
    int32_t *slot_start;      // (L,X+1) expert e's slots: slots[slot_start[e] .. slot_start[e + 1])
    float *xfc, *xgact;       // (L,NK,2XF), (L,NK,XF) the experts' [gate | up] and act(gate)
    float *xout;              // (L,NK,C) the experts' outputs, before their routing weights
    float *shared_logit;      // (L,N) shared expert gate's logit (Qwen2-MoE)
    float *shared_out;        // (L,N,C) shared expert's output, before its gate
    float *xf;                // (N,C) input of the head (decoder: after the final norm)
    // (rows,C), rows = S pooled or N for POOL_NONE (head_rows): pooled rows; head_dense
    // before / after its activation; head_norm's output
    float *pooled, *dense, *activated, *head_normed;
    float *cos, *sin;         // (S,T,R) RoPE tables for each sequence's positions, R = rope_dim
    float *cos_local, *sin_local; // (S,T,R) the same from inv_freq_local (Gemma 3's sliding layers)
    float *key_bias;          // (S,T) 0 for real keys, -inf for padding
    // DeBERTa (rel_emb): the normed relative embeddings and their norm's statistics; each
    // layer's pk and pq, head-major; per head, q·pkᵀ and k·pqᵀ before the gather
    float *rel_normed, *rel_mean, *rel_rstd; // (R2,C), (R2), (R2)
    float *pos_k, *pos_q;     // (L,H,R2,D) each
    float *c2p, *p2c;         // (H,block,R2), (H,T,R2): per head, q·pkᵀ of a block's queries, k·pqᵀ
    // scratch
    float *a, *b;             // (N,max(C,FU)) block inputs/outputs
    float *qkv;               // (N,QKV)
    float *hm, *hm2;          // (H,T,D) head-major q / context of one sequence
    float *kv_raw;            // (KV,T,D) k before RoPE
    float *hidden;            // (N,F) MLP inner activation (the backward's: act(gate) when gated)
    float *probs;             // (H,block,T) each head's attention probabilities of one block
    float *xin, *xhid;        // (NK,C), (NK,XF) experts: gathered inputs, inner activations
    // backward scratch
    float *gx, *g1, *g2;      // (N,C)
    float *gqkv;              // (N,QKV)
    float *gq, *gk, *gv;      // (H,T,D), (KV,T,D) x2: one sequence
    float *gq_rot, *gk_rot;   // (H,T,D), (KV,T,D): before un-rotating
    float *gctx;              // (N,HD)
    float *gctx_hm;           // (H,T,D)
    float *gk_heads, *gv_heads; // (H,T,D) each query head's share of g at its key/value head
    float *gatt, *gscores;    // (H,block,T) per head: g at a block's probabilities, and at its scores
    float *gfc;               // (N,FU)
    float *ghid, *ghid2;      // (N,F)
    float *gxout, *gxin;      // (NK,C) experts: g at their outputs, at their (gathered) inputs
    float *gxhid, *gxhid2;    // (NK,XF)
    float *gxfc;              // (NK,2XF)
    float *groute, *grouter;  // (N,X) g at the router probabilities, at the router logits
    float *route_s;           // (X) norm_topk: one row's weights over all experts (0: not selected)
    float *ghead, *ghead2;    // (rows,max(C,NO)) head gradients
    float *gemb, *gemb2;      // (N,E) g at the embeddings' norm output / sum (E != C or emb_proj)
    float *gc2p, *gp2c;       // (H,block,R2), (H,T,R2) DeBERTa: g scattered back to q·pkᵀ, k·pqᵀ
    float *gpos_k, *gpos_q;   // (H,R2,D) g at pk, pq of one sequence and layer
    float *pos_rows;          // (R2,HD) token-major rows: pk / pq before to_heads, or their g
    float *grel;              // (S,R2,C) g at the normed relative embeddings, per sequence
    float *grel_raw;          // (R2,C) one sequence's g at the raw ones
    float *gpost;             // (N,C) post_norms: g at a branch's output, before its norm
    float *gseed;             // like raw_logits: the seed crossed back through the soft-capping
    float *seed;              // (S,NO) the argmax seed, when the call gives none
    float *typed;             // carved storage for the typed arrays below
    double *head_sums;        // (H) relevance arriving at each head of one sequence
    int32_t *kstar;           // (S,L,H,T) head statistics: each query's most attended key (-1: not counted)
    // the call's outputs the forward writes block by block, at the chunk's first sequence; NULL: none
    float *att_out;           // (S,L,H,T,T) attention probabilities
    const uint8_t *stat_queries, *stat_keys; // (S,T) head statistics' queries and candidate keys
    float *xq;                // (S,C) the residual rows a pruned last layer keeps
} Workspace;

// A stream's outputs for the chunk: each points at the chunk's first sequence
// in the call's (B,...) arrays; NULL when not requested.
typedef struct {
    StreamRules rules;
    const float *head_mask;
    bool renormalize;
    MaskSemantics semantics;
    float *head_relevance;
    float *embed_grad, *tokens, *positions, *types, *relative;
    float *attention_grad, *attention_relevance, *hidden_grad, *hidden_relevance;
} ChunkStream;

// blocks (engine.c)
// Row-wise blocks run on layer_rows() rows: N, or S for a pruned last layer.
// An Affine norm whose .w is NULL is the identity (norm_forward copies, norm_backward adds).
// The norms of stats slot 0 (Workspace.stats): the embedding norm, the final norm, the head's.
enum { EMBED_NORM, FINAL_NORM, HEAD_NORM };
ptrdiff_t layer_rows(const Model *m, const Workspace *w, int l);
// x (N,C) -> the (rows,C) residual rows layer l keeps; and back: gx (N,C) += g (rows,C)
const float *residual_rows(const Model *m, Workspace *w, int l, const float *x);
void residual_rows_backward(const Model *m, const Workspace *w, int l, float *gx, const float *g);
void norm_forward(const Model *m, const Workspace *w, float *y, const float *x, Affine n, int slot, int which,
                  ptrdiff_t rows);
void norm_backward(const Model *m, const Workspace *w, float *gx, const float *g, const float *x, Affine n,
                   int slot, int which, ptrdiff_t rows, UnaryRule rule);
// ids (or the call's embeds), positions, types -> emb (N,E), then x0 (N,C): the embedding norm (if any), the
// projection (if any); backward: g (N,C) at x0 -> the stream's embedding outputs
void embed_forward(const Model *m, Workspace *w, float *x0);
void embed_backward(const Model *m, Workspace *w, const float *g, const ChunkStream *s);
// DeBERTa: the relative embeddings' norm (forward), and the stream's relevance of their rows
// from the g every layer's attention_backward accumulated in w->grel (backward)
void relative_forward(const Model *m, Workspace *w);
void relative_backward(const Model *m, Workspace *w, const ChunkStream *s);
// x (N,C) -> out (rows,C): the attention branch of layer l (its input already normed)
void attention_forward(const Model *m, Workspace *w, int l, float *out, const float *x);
// g (rows,C) at the branch output -> gx (N,C) +=
void attention_backward(const Model *m, Workspace *w, int l, float *gx, const float *g,
                        const ChunkStream *s);
// x (rows,C) -> out (rows,C); backward: g (rows,C) -> gx (rows,C) +=
void mlp_forward(const Model *m, Workspace *w, int l, float *out, const float *x);
void mlp_backward(const Model *m, Workspace *w, int l, float *gx, const float *g, const ChunkStream *s);
// xf (N,C), or (S,C) when pruned -> logits (S,NO) or (N,NO)
void head_forward(const Model *m, Workspace *w, float *logits);
// seed like the logits -> gxf (N,C) =
void head_backward(const Model *m, Workspace *w, float *gxf, const float *seed, const ChunkStream *s);
void hidden_taps(const Model *m, const Workspace *w, int l, const float *g, const ChunkStream *s);

// Gemma 3: each branch's output RMSNorm-ed before the residual add
bool post_norms(const Model *m);

// families: the order of the blocks
void encoder_forward(const Model *m, Workspace *w);
void encoder_backward(const Model *m, Workspace *w, const float *gxf, const ChunkStream *s);
void decoder_forward(const Model *m, Workspace *w);
void decoder_backward(const Model *m, Workspace *w, const float *gxf, const ChunkStream *s);

#endif // MASKLRP_ENGINE_H
