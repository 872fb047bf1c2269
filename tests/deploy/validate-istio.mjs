// Reads Kubernetes documents (a JSON array) on stdin and validates each Istio resource against
// Istio's CRD schemas (@kubernetes-models/istio). Prints one line per document; exits 1 if any
// fails or if an Istio kind has no schema here.
import * as networkingV1 from "@kubernetes-models/istio/networking.istio.io/v1";
import * as networkingV1alpha3 from "@kubernetes-models/istio/networking.istio.io/v1alpha3";
import * as extensionsV1alpha1 from "@kubernetes-models/istio/extensions.istio.io/v1alpha1";

const models = {
  "networking.istio.io/v1": networkingV1,
  "networking.istio.io/v1alpha3": networkingV1alpha3,
  "extensions.istio.io/v1alpha1": extensionsV1alpha1,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const doc of JSON.parse(input)) {
  const name = `${doc.apiVersion} ${doc.kind} ${doc.metadata?.name}`;
  const Model = models[doc.apiVersion]?.[doc.kind];
  if (!Model) {
    console.log(`NO SCHEMA ${name}`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`valid ${name}`);
  } catch (error) {
    console.log(`INVALID ${name}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
