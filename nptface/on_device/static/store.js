// Templates in the browser's IndexedDB: they never leave the device unless the user exports them.
//
// A record is one person for one model (the bundle's checkpoint sha256): the mean of their unit
// embeddings and the image count, the same fields as the CLI's gallery .npz, so a template
// can be extended exactly. Templates of another model are kept but never compared.

const DB_NAME = "nptface-demo";
const STORE = "templates";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export async function openStore() {
  const open = indexedDB.open(DB_NAME, 1);
  open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: ["model", "name"] });
  const db = await request(open);
  const tx = (mode) => db.transaction(STORE, mode).objectStore(STORE);
  return {
    async people(model) {
      const all = await request(tx("readonly").getAll());
      return all.filter((r) => r.model === model).sort((a, b) => a.name.localeCompare(b.name));
    },
    async get(model, name) {
      return request(tx("readonly").get([model, name]));
    },
    async put(record) {
      return request(tx("readwrite").put(record));
    },
    async remove(model, name) {
      return request(tx("readwrite").delete([model, name]));
    },
  };
}

// The template after adding unit embeddings to a person's record (or a new record).
export function extended(record, model, variant, name, embeddings) {
  const dim = embeddings[0].length;
  const count = (record ? record.count : 0) + embeddings.length;
  const mean = new Float64Array(dim);
  for (let i = 0; i < dim; i++) {
    let sum = record ? record.template[i] * record.count : 0;
    for (const e of embeddings) sum += e[i];
    mean[i] = sum / count;
  }
  return { model, variant, name, count, template: Array.from(mean), updated: new Date().toISOString() };
}
