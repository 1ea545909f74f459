// A full wasm heap on the threaded module (XNNPACK's pool of 2 threads): test/helpers/wasmfault.ts.
import { test } from 'node:test';
import { fullHeapStopsTheJob, FULL_HEAP_TEST } from '../helpers/wasmfault';

test(`${FULL_HEAP_TEST} (threaded module)`, () => fullHeapStopsTheJob(2));
