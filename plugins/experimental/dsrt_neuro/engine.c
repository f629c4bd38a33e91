/* dsrt_neuro engine: event-driven spiking network simulation, one call runs many time steps.
 *
 * Layout shared by both modes:
 *   - neurons 0..n-1; each has a parameter group grp[i] indexing a small table (stays in L1);
 *   - synaptic input targets are "slots" 2*i + channel (two current channels per neuron);
 *   - a ring buffer of dslots input frames (dslots = max delay + 1) holds inputs that arrive later;
 *   - synapses are compressed sparse rows by presynaptic neuron, so only neurons that spiked touch
 *     synapse memory (event-driven delivery).
 * Order within step t: external inputs for t are added to the frames, each neuron takes its frame
 * (inputs arriving at t), integrates one step, thresholds and resets; then this step's spikes are
 * delivered into frame t + delay (delay >= 1); then learning runs.
 */
#include <stdint.h>
#include <string.h>

#define GP 12   /* float group parameters: vinf dm vdrive c0 c1 a0 a1 vth vreset gin ref flags */
#define F_DIRECT 1
#define F_SPIKING 2
#define F_GRADED 4
#define MAXD 256

int64_t snn_float(int32_t n, int32_t steps, int32_t t0, double *v, double *cur, int32_t *refcnt,
                  const uint16_t *grp, const double *gp, const int32_t *rowptr, const int32_t *target,
                  double *weight, const uint8_t *delay, int32_t dslots, double *buf, int32_t n_in,
                  const double *xin, const int32_t *in_ptr, const int32_t *in_tgt, const double *in_w,
                  const uint8_t *in_delay, int32_t *spk_t, int32_t *spk_i, int64_t spk_cap, int32_t n_tr,
                  const int32_t *tr_idx, int32_t tr_every, double *tr_out, int32_t learn, const double *lp,
                  const int32_t *syn_pre, const int32_t *csc_ptr, const int32_t *csc_syn, double *x_pre,
                  double *x_post, double *elig, const double *reward, int32_t *scratch, double *payload,
                  int64_t *counters)
{
    const int64_t m = 2 * (int64_t)n;
    int64_t nspk_total = 0, synops = 0, in_ops = 0;
    int64_t base[MAXD];
    for (int32_t s = 0; s < steps; ++s) {
        const int64_t t = (int64_t)t0 + s;
        for (int32_t d = 0; d < dslots; ++d) base[d] = ((t + d) % dslots) * m;
        double *inb = buf + base[0];
        if (n_in > 0) {
            const double *x = xin + (int64_t)s * n_in;
            for (int32_t c = 0; c < n_in; ++c) {
                const double xc = x[c];
                if (xc == 0.0) continue;
                for (int32_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) buf[base[in_delay[k]] + in_tgt[k]] += in_w[k] * xc;
                in_ops += in_ptr[c + 1] - in_ptr[c];
            }
        }
        int32_t nsp = 0;
        for (int32_t i = 0; i < n; ++i) {
            const double *p = gp + (int64_t)grp[i] * GP;
            const int flags = (int)p[11];
            const double in0 = inb[2 * i], in1 = inb[2 * i + 1];
            inb[2 * i] = 0.0;
            inb[2 * i + 1] = 0.0;
            double vi = v[i], i0 = cur[2 * i], i1 = cur[2 * i + 1];
            if (flags & F_DIRECT) vi += p[9] * (in0 + in1);
            else { i0 += p[9] * in0; i1 += p[9] * in1; }
            int32_t r = refcnt[i];
            if (r > 0) --r;
            if (r == 0) vi = p[0] + (vi - p[0]) * p[1] + p[2] + p[3] * i0 + p[4] * i1;
            i0 *= p[5];
            i1 *= p[6];
            if ((flags & F_SPIKING) && r == 0 && vi > p[7]) {
                if (nspk_total < spk_cap) { spk_t[nspk_total] = (int32_t)t; spk_i[nspk_total] = i; }
                ++nspk_total;
                payload[nsp] = (flags & F_GRADED) ? vi : 1.0;
                scratch[nsp++] = i;
                vi = p[8];
                r = (int32_t)p[10];
            }
            v[i] = vi; cur[2 * i] = i0; cur[2 * i + 1] = i1; refcnt[i] = r;
        }
        if (dslots == 2) {
            double *nb = buf + base[1];
            for (int32_t q = 0; q < nsp; ++q) {
                const int32_t j = scratch[q];
                const double pl = payload[q];
                const int32_t k1 = rowptr[j + 1];
                for (int32_t k = rowptr[j]; k < k1; ++k) nb[target[k]] += weight[k] * pl;
                synops += k1 - rowptr[j];
            }
        } else {
            for (int32_t q = 0; q < nsp; ++q) {
                const int32_t j = scratch[q];
                const double pl = payload[q];
                const int32_t k1 = rowptr[j + 1];
                for (int32_t k = rowptr[j]; k < k1; ++k) buf[base[delay[k]] + target[k]] += weight[k] * pl;
                synops += k1 - rowptr[j];
            }
        }
        if (learn) {
            /* lp: dec_pre dec_post a_plus a_minus w_min w_max dec_elig lr */
            const double dpre = lp[0], dpost = lp[1], ap = lp[2], am = lp[3], wmin = lp[4], wmax = lp[5];
            const int three = learn == 2;
            double *tgt_w = three ? elig : weight;
            for (int32_t i = 0; i < n; ++i) { x_pre[i] *= dpre; x_post[i] *= dpost; }
            for (int32_t q = 0; q < nsp; ++q) {          /* pre spiked: depression by post trace */
                const int32_t j = scratch[q];
                for (int32_t k = rowptr[j]; k < rowptr[j + 1]; ++k) tgt_w[k] -= am * x_post[target[k] >> 1];
            }
            for (int32_t q = 0; q < nsp; ++q) {          /* post spiked: potentiation by pre trace */
                const int32_t i = scratch[q];
                for (int32_t e = csc_ptr[i]; e < csc_ptr[i + 1]; ++e) {
                    const int32_t k = csc_syn[e];
                    tgt_w[k] += ap * x_pre[syn_pre[k]];
                }
            }
            for (int32_t q = 0; q < nsp; ++q) { x_pre[scratch[q]] += 1.0; x_post[scratch[q]] += 1.0; }
            const int64_t ns = rowptr[n];
            if (three) {
                const double rw = reward[s] * lp[7];
                for (int64_t k = 0; k < ns; ++k) {
                    if (rw != 0.0) weight[k] += rw * elig[k];
                    elig[k] *= lp[6];
                }
            }
            if (!three || reward[s] != 0.0)
                for (int64_t k = 0; k < ns; ++k) weight[k] = weight[k] < wmin ? wmin : (weight[k] > wmax ? wmax : weight[k]);
        }
        if (tr_every > 0 && s % tr_every == 0) {
            double *row = tr_out + (int64_t)(s / tr_every) * n_tr;
            for (int32_t q = 0; q < n_tr; ++q) row[q] = v[tr_idx[q]];
        }
    }
    counters[0] = nspk_total;
    counters[1] = synops;
    counters[2] = in_ops;
    return nspk_total;
}

/* Loihi-style fixed point.  Integer group parameters (IP per group):
 *   du dv (12-bit decays, 0..4096), vth (already shifted: mantissa << 6), vreset, bias, ref, flags.
 * u: 24-bit two's complement, wraps; v: saturates at +-(2^23 - 1).  Products round toward zero. */
#define IP 7
static inline int32_t wrap24(int64_t x) { return (int32_t)(((x + (1LL << 23)) & ((1LL << 24) - 1)) - (1LL << 23)); }
static inline int64_t decay12(int64_t x, int64_t d) {
    const int64_t p = x * (4096 - d);
    return p >= 0 ? (p >> 12) : -((-p) >> 12);
}

int64_t snn_fixed(int32_t n, int32_t steps, int32_t t0, int32_t *v, int32_t *u, int32_t *refcnt,
                  const uint16_t *grp, const int32_t *ip, const int32_t *rowptr, const int32_t *target,
                  const int32_t *weight, const uint8_t *delay, int32_t dslots, int32_t *buf, int32_t n_in,
                  const int32_t *xin, const int32_t *in_ptr, const int32_t *in_tgt, const int32_t *in_w,
                  const uint8_t *in_delay, int32_t *spk_t, int32_t *spk_i, int64_t spk_cap, int32_t n_tr,
                  const int32_t *tr_idx, int32_t tr_every, int32_t *tr_out, int32_t *scratch, int64_t *counters)
{
    const int64_t vmax = (1LL << 23) - 1;
    int64_t nspk_total = 0, synops = 0, in_ops = 0;
    int64_t base[MAXD];
    for (int32_t s = 0; s < steps; ++s) {
        const int64_t t = (int64_t)t0 + s;
        for (int32_t d = 0; d < dslots; ++d) base[d] = ((t + d) % dslots) * n;
        int32_t *inb = buf + base[0];
        if (n_in > 0) {
            const int32_t *x = xin + (int64_t)s * n_in;
            for (int32_t c = 0; c < n_in; ++c) {
                const int32_t xc = x[c];
                if (xc == 0) continue;
                for (int32_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) buf[base[in_delay[k]] + in_tgt[k]] += in_w[k] * xc;
                in_ops += in_ptr[c + 1] - in_ptr[c];
            }
        }
        int32_t nsp = 0;
        for (int32_t i = 0; i < n; ++i) {
            const int32_t *p = ip + (int64_t)grp[i] * IP;
            const int64_t act = (int64_t)inb[i] * 64;      /* synaptic input left-shifted by 6 */
            inb[i] = 0;
            const int32_t ui = wrap24(decay12(u[i], p[0]) + act);
            int32_t r = refcnt[i];
            if (r > 0) --r;
            int64_t vi = v[i];
            if (r == 0) {
                vi = decay12(vi, p[1]) + ui + p[4];
                vi = vi > vmax ? vmax : (vi < -vmax ? -vmax : vi);
            }
            if ((p[6] & F_SPIKING) && r == 0 && vi > p[2]) {
                if (nspk_total < spk_cap) { spk_t[nspk_total] = (int32_t)t; spk_i[nspk_total] = i; }
                ++nspk_total;
                scratch[nsp++] = i;
                vi = p[3];
                r = p[5];
            }
            u[i] = ui; v[i] = (int32_t)vi; refcnt[i] = r;
        }
        for (int32_t q = 0; q < nsp; ++q) {
            const int32_t j = scratch[q];
            for (int32_t k = rowptr[j]; k < rowptr[j + 1]; ++k) buf[base[delay[k]] + target[k]] += weight[k];
            synops += rowptr[j + 1] - rowptr[j];
        }
        if (tr_every > 0 && s % tr_every == 0) {
            int32_t *row = tr_out + (int64_t)(s / tr_every) * n_tr;
            for (int32_t q = 0; q < n_tr; ++q) row[q] = v[tr_idx[q]];
        }
    }
    counters[0] = nspk_total;
    counters[1] = synops;
    counters[2] = in_ops;
    return nspk_total;
}
