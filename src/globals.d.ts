declare const DOMLORA_VERSION: string;
